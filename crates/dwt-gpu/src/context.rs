//! The GPU context: adapter, device, queue, and the compiled pipelines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wgpu::util::DeviceExt;

use crate::{Error, Result};

/// The compute kernels, one WGSL entry point each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    Analysis,
    Synthesis,
    Reconstruct,
    GradDense,
    GradFactors,
}

impl Kernel {
    fn entry(self) -> &'static str {
        match self {
            Kernel::Analysis => "analysis",
            Kernel::Synthesis => "synthesis",
            Kernel::Reconstruct => "reconstruct",
            Kernel::GradDense => "grad_dense",
            Kernel::GradFactors => "grad_factors",
        }
    }
}

/// Pipelines are specialised per kernel and, for the filter-bank kernels,
/// per filter length and extension mode (WGSL pipeline constants); the taps
/// themselves live in buffers, so every wavelet of one length shares them.
type PipelineKey = (Kernel, u32, u32);

#[derive(Debug)]
struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    dwt: wgpu::ShaderModule,
    sparse: wgpu::ShaderModule,
    pipelines: Mutex<HashMap<PipelineKey, wgpu::ComputePipeline>>,
    /// Reused readback buffer, grown on demand.
    staging: Mutex<Option<wgpu::Buffer>>,
}

/// A GPU device with this crate's compiled kernels. Cheap to clone (an
/// `Arc`); plans keep a clone.
///
/// The adapter comes from [`wgpu::util::initialize_adapter_from_env_or_default`],
/// so `WGPU_BACKEND=vulkan|metal|dx12|gl` and `WGPU_ADAPTER_NAME=<substring>`
/// choose it. The device is opened with the adapter's own limits, not
/// wgpu's conservative defaults, so matrices beyond 128 MiB (4096×11008 f32
/// is 180 MB) can be bound where the hardware allows it.
#[derive(Debug, Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Context {
    /// Open the adapter chosen by the environment (see the type docs).
    ///
    /// # Errors
    /// [`Error::NoAdapter`] when no adapter is available,
    /// [`Error::RequestDevice`] when it refuses a device.
    pub async fn new_async() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
            .await
            .map_err(|e| Error::NoAdapter { reason: e.to_string() })?;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("dwt-gpu"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await?;
        // Everything this crate does runs under error scopes; anything that
        // still escapes them is reported instead of wgpu's default panic.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!("dwt-gpu: uncaptured GPU error: {e}");
        }));
        let module = |label, src: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            })
        };
        let dwt = module("dwt.wgsl", include_str!("shaders/dwt.wgsl"));
        let sparse = module("sparse.wgsl", include_str!("shaders/sparse.wgsl"));
        Ok(Context {
            inner: Arc::new(Inner {
                info: adapter.get_info(),
                limits,
                dwt,
                sparse,
                device,
                queue,
                pipelines: Mutex::new(HashMap::new()),
                staging: Mutex::new(None),
            }),
        })
    }

    /// Blocking [`Context::new_async`].
    ///
    /// # Errors
    /// As [`Context::new_async`].
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// The adapter: name, backend, driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// A one-line description, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!(
            "{} ({:?}, {:?}, driver {})",
            i.name, i.backend, i.device_type, i.driver_info
        )
    }

    /// The device's limits (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The largest buffer one kernel can bind, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        let l = &self.inner.limits;
        l.max_buffer_size.min(l.max_storage_buffer_binding_size)
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// A storage buffer of `bytes` (rounded up to 4, at least 4) that one
    /// kernel binds whole: checked against the binding limit and allocated
    /// under an out-of-memory scope.
    pub(crate) fn storage(&self, what: &'static str, bytes: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        self.alloc(what, bytes, usage, self.max_binding_bytes())
    }

    /// A storage buffer that kernels bind in blocks (matrices): checked
    /// against the buffer-size limit only.
    pub(crate) fn storage_blocked(
        &self,
        what: &'static str,
        bytes: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.alloc(what, bytes, usage, self.inner.limits.max_buffer_size)
    }

    fn alloc(&self, what: &'static str, bytes: u64, usage: wgpu::BufferUsages, limit: u64) -> Result<wgpu::Buffer> {
        let size = bytes.max(4).next_multiple_of(4);
        if size > limit {
            return Err(Error::TooLarge {
                what,
                bytes: size,
                limit,
            });
        }
        let scope = self.device().push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size,
            usage: wgpu::BufferUsages::STORAGE | usage,
            mapped_at_creation: false,
        });
        match pollster::block_on(scope.pop()) {
            Some(_) => Err(Error::OutOfMemory { what, bytes: size }),
            None => Ok(buf),
        }
    }

    /// A storage buffer holding `data` (at least one element).
    pub(crate) fn storage_init<T: bytemuck::Pod + Default>(
        &self,
        what: &'static str,
        data: &[T],
    ) -> Result<wgpu::Buffer> {
        let bytes = std::mem::size_of_val(data) as u64;
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::TooLarge { what, bytes, limit });
        }
        let one = [T::default()];
        let contents: &[T] = if data.is_empty() { &one } else { data };
        let scope = self.device().push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buf = self.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(what),
            contents: bytemuck::cast_slice(contents),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        });
        match pollster::block_on(scope.pop()) {
            Some(_) => Err(Error::OutOfMemory { what, bytes }),
            None => Ok(buf),
        }
    }

    /// A small uniform buffer holding `params`.
    pub(crate) fn uniform<T: bytemuck::Pod>(&self, params: &T) -> wgpu::Buffer {
        self.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// The pipeline of `kernel` for filter length `taps` and GPU mode code
    /// `mode`, compiled on first use and cached.
    ///
    /// A backend that cannot compile the shader reports [`Error::Device`]
    /// instead of wgpu's default panic.
    pub(crate) fn pipeline(&self, kernel: Kernel, taps: u32, mode: u32) -> Result<wgpu::ComputePipeline> {
        let key = (kernel, taps, mode);
        let mut cache = lock(&self.inner.pipelines);
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let module = match kernel {
            Kernel::Analysis | Kernel::Synthesis => &self.inner.dwt,
            _ => &self.inner.sparse,
        };
        let constants: &[(&str, f64)] = match kernel {
            Kernel::Analysis | Kernel::Synthesis => &[("L", taps as f64), ("MODE", mode as f64)],
            _ => &[],
        };
        let p = self.scoped(|d| {
            d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry()),
                layout: None,
                module,
                entry_point: Some(kernel.entry()),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })?;
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// Run `make` under a validation error scope.
    fn scoped<T>(&self, make: impl FnOnce(&wgpu::Device) -> T) -> Result<T> {
        let scope = self.device().push_error_scope(wgpu::ErrorFilter::Validation);
        let t = make(self.device());
        match pollster::block_on(scope.pop()) {
            Some(e) => Err(Error::Device(e.to_string())),
            None => Ok(t),
        }
    }

    /// A bind group from explicit resources (buffer ranges).
    pub(crate) fn bind(
        &self,
        pipeline: &wgpu::ComputePipeline,
        resources: Vec<(u32, wgpu::BindingResource<'_>)>,
    ) -> Result<wgpu::BindGroup> {
        let entries: Vec<_> = resources
            .into_iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource })
            .collect();
        self.scoped(|d| {
            d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        })
    }

    /// Record commands with `record`, submit them, and turn any validation
    /// or out-of-memory error into an [`Error`].
    pub(crate) fn submit(&self, record: impl FnOnce(&mut wgpu::CommandEncoder)) -> Result<()> {
        let oom = self.device().push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device().push_error_scope(wgpu::ErrorFilter::Validation);
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        record(&mut encoder);
        self.queue().submit([encoder.finish()]);
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            Some(e) => Err(Error::Device(e.to_string())),
            None => Ok(()),
        }
    }

    /// Copy the first `min(src.len(), dst.len())` elements of `src` to
    /// `dst` on the device and wait: the memory-bandwidth reference of the
    /// benchmarks.
    ///
    /// # Errors
    /// [`Error::Device`] when the device fails.
    pub fn copy(&self, src: &crate::GpuMatrix, dst: &crate::GpuMatrix) -> Result<()> {
        let bytes = src.len().min(dst.len()) as u64 * 4;
        self.submit(|enc| enc.copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, 0, bytes))?;
        self.wait()
    }

    /// Resolve when the work submitted so far has finished, driving the
    /// device with non-blocking polls (no thread blocks in the driver).
    ///
    /// # Errors
    /// [`Error::Device`] when the device is lost.
    pub async fn wait_async(&self) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        self.queue().on_submitted_work_done(move || {
            // The receiver outlives the wait below.
            let _ = tx.send(Ok(()));
        });
        Done {
            ctx: self,
            rx: &rx,
            block: false,
        }
        .await
    }

    /// Wait until the queue is idle.
    ///
    /// # Errors
    /// [`Error::Device`] when the device is lost or the wait fails.
    pub fn wait(&self) -> Result<()> {
        self.device()
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Device(e.to_string()))
    }

    /// Copy `bytes` from the start of `src` back to the host, through the
    /// context's reused staging buffer.
    pub(crate) async fn read_f32(&self, src: &wgpu::Buffer, len: usize, block: bool) -> Result<Vec<f32>> {
        let bytes = (len as u64 * 4).max(4);
        // Take the staging buffer out for the duration (no lock across the
        // await); a concurrent reader allocates its own.
        let cached = lock(&self.inner.staging).take();
        let stage = match cached {
            Some(s) if s.size() >= bytes => s,
            _ => {
                let scope = self.device().push_error_scope(wgpu::ErrorFilter::OutOfMemory);
                let buf = self.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if scope.pop().await.is_some() {
                    return Err(Error::OutOfMemory {
                        what: "readback buffer",
                        bytes,
                    });
                }
                buf
            }
        };
        let out = self.read_through(src, &stage, len, bytes, block).await;
        // A failed readback may leave the buffer mapped: drop it then.
        if out.is_ok() {
            *lock(&self.inner.staging) = Some(stage);
        }
        out
    }

    async fn read_through(
        &self,
        src: &wgpu::Buffer,
        stage: &wgpu::Buffer,
        len: usize,
        bytes: u64,
        block: bool,
    ) -> Result<Vec<f32>> {
        self.submit(|enc| enc.copy_buffer_to_buffer(src, 0, stage, 0, bytes))?;
        let (tx, rx) = std::sync::mpsc::channel();
        stage.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            // The receiver outlives the wait below; a send error cannot happen.
            let _ = tx.send(r);
        });
        Done {
            ctx: self,
            rx: &rx,
            block,
        }
        .await?;
        let out = {
            let view = stage
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| Error::Device(e.to_string()))?;
            bytemuck::cast_slice::<u8, f32>(&view)[..len].to_vec()
        };
        stage.unmap();
        Ok(out)
    }
}

/// Resolves when a wgpu callback (`map_async`, `on_submitted_work_done`)
/// has fired. On native backends callbacks run inside `Device::poll`, so
/// polling this future drives the device without blocking.
struct Done<'a, E> {
    ctx: &'a Context,
    rx: &'a std::sync::mpsc::Receiver<Result<(), E>>,
    /// Block in `Device::poll` until the queue is idle (blocking wrappers).
    block: bool,
}

impl<E: std::fmt::Display> std::future::Future for Done<'_, E> {
    type Output = Result<()>;
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let how = if self.block {
            wgpu::PollType::wait_indefinitely()
        } else {
            wgpu::PollType::Poll
        };
        if let Err(e) = self.ctx.device().poll(how) {
            return std::task::Poll::Ready(Err(Error::Device(e.to_string())));
        }
        match self.rx.try_recv() {
            Ok(r) => std::task::Poll::Ready(r.map_err(|e| Error::Device(e.to_string()))),
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                cx.waker().wake_by_ref();
                std::thread::yield_now();
                std::task::Poll::Pending
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                std::task::Poll::Ready(Err(Error::Device("the readback was dropped".into())))
            }
        }
    }
}
