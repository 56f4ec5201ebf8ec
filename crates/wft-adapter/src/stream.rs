//! Writing a checkpoint tensor by tensor: the header is copied verbatim
//! (merging changes no name, dtype, shape or offset), untouched tensors are
//! copied file to file by the kernel (`copy_file_range` on Linux, so their
//! pages never enter this process; written from the map elsewhere), and the
//! tensors being changed are written by the caller one at a time. Memory
//! stays at about one tensor whatever the checkpoint's size.
//!
//! Atomicity: a single file goes to a temporary file beside the output,
//! synced, then renamed over it. A sharded checkpoint goes to a temporary
//! folder beside the output (every shard and the index synced), then that
//! folder is renamed to the output, which must not exist yet (or be an
//! empty folder): a directory cannot be replaced atomically. A crash or
//! SIGKILL leaves the output path as it was; the temporary `.wft-*.tmp`
//! file or folder stays behind and can be deleted.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::tensors::{Bytes, INDEX_FILE, Shard, TensorFile, parent_dir, temp_dir_beside, temp_file_beside};
use crate::{Error, Result};

/// Writes a replacement for a tensor into the writer and returns `true`, or
/// returns `false` to have the tensor copied unchanged. A replacement must
/// have exactly the original's byte length.
pub(crate) type Replace<'a> = dyn FnMut(&str, &mut dyn Write) -> Result<bool> + 'a;

/// Rewrites a tensor's bytes in place, given the copy of them in the output
/// (the base's bytes until changed); returns whether it changed them.
pub(crate) type Patch<'a> = dyn FnMut(&str, &mut [u8]) -> Result<bool> + 'a;

/// How [`rewrite`] makes each tensor of the output.
pub(crate) enum Edit<'a, 'b> {
    /// Tensor by tensor: unchanged ones copied by the kernel, changed ones
    /// written whole by the caller.
    Stream(&'a mut Replace<'b>),
    /// The whole file copied by the kernel first (a reflink where the
    /// filesystem shares extents), then mapped and patched in place: only
    /// the bytes the caller writes are written.
    Patch(&'a mut Patch<'b>),
}

/// Write `base` to `out` (a file, or a folder for a sharded base), every
/// tensor copied byte for byte except those `edit` changes.
pub(crate) fn rewrite(
    base: &TensorFile,
    out: &Path,
    mut edit: Edit<'_, '_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    refuse_input_as_output(base, out)?;
    let total = base.names().len();
    let mut done = 0;
    let mut tick = || {
        done += 1;
        progress(done, total);
    };
    let dir = parent_dir(out);
    let Some(index) = base.index_text() else {
        let tmp = temp_file_beside(out)?;
        let shard = &base.shards()[0];
        edit_shard(shard, tmp.as_file(), out, &mut edit, &mut tick)?;
        keep_permissions(shard, tmp.path())?;
        tmp.as_file().sync_all().map_err(|e| Error::io(out, e))?;
        tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
        return sync_dir(dir);
    };
    if out.exists() && std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some()) {
        return Err(Error::invalid(
            format!("output {}", out.display()),
            "a sharded checkpoint is written as a folder, and this path already exists (a folder cannot be \
             replaced atomically): remove it or choose another",
        ));
    }
    let tmp = temp_dir_beside(out)?;
    for shard in base.shards() {
        // Shard names were checked to be plain file names when the index was read.
        let name = shard.path.file_name().unwrap_or_default();
        let path = tmp.path().join(name);
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        edit_shard(shard, &file, &out.join(name), &mut edit, &mut tick)?;
        keep_permissions(shard, &path)?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
    }
    let path = tmp.path().join(INDEX_FILE);
    let mut file = File::create_new(&path).map_err(|e| Error::io(&path, e))?;
    file.write_all(index.as_bytes()).map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    sync_dir(tmp.path())?;
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, out) {
        let _ = std::fs::remove_dir_all(&kept);
        return Err(Error::io(out, e));
    }
    sync_dir(dir)
}

/// Give an output shard its input's permissions (temporary files are
/// created private, 0600 on Unix, and a merged model should be as readable
/// as its base).
fn keep_permissions(shard: &Shard, path: &Path) -> Result<()> {
    if let Bytes::Mapped(_, src) = &shard.bytes {
        let perms = src.metadata().map_err(|e| Error::io(&shard.path, e))?.permissions();
        std::fs::set_permissions(path, perms).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// Make a rename durable (a no-op where folders cannot be opened).
fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir) {
        Ok(f) => f.sync_all().or_else(|e| match e.kind() {
            // Some filesystems refuse fsync on folders; the data is synced.
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported => Ok(()),
            _ => Err(Error::io(dir, e)),
        }),
        Err(_) => Ok(()),
    }
}

/// Counts what the caller writes, so a replacement of the wrong length is
/// caught before it shifts every later tensor.
struct Counting<W> {
    inner: W,
    n: usize,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// One shard, as `edit` says.
fn edit_shard(shard: &Shard, file: &File, out: &Path, edit: &mut Edit<'_, '_>, tick: &mut dyn FnMut()) -> Result<()> {
    match edit {
        Edit::Stream(replace) => write_shard(shard, file, out, *replace, tick),
        Edit::Patch(patch) => patch_shard(shard, file, out, *patch, tick),
    }
}

/// One shard copied whole into `file` (empty, open for reading and
/// writing), then every tensor offered to `patch` in offset order, in the
/// mapped copy.
fn patch_shard(shard: &Shard, file: &File, out: &Path, patch: &mut Patch<'_>, tick: &mut dyn FnMut()) -> Result<()> {
    let io = |e| Error::io(out, e);
    copy_range(shard, 0..shard.bytes.len(), file).map_err(io)?;
    let mut map = map_copy(file, out, shard.bytes.len())?;
    for name in shard.meta.offset_keys() {
        let Some(info) = shard.meta.info(&name) else { continue };
        let range = shard.range(info);
        if patch(&name, &mut map[range.clone()])? && !range.is_empty() {
            // SAFETY: a shared file mapping: MADV_DONTNEED drops this
            // process's page-table entries only; the written pages stay in
            // the page cache and go to the file. Nothing borrows the range
            // any more. Failure only costs memory.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len()) };
        }
        shard.bytes.release(range);
        tick();
    }
    map.flush().map_err(io)
}

/// Map `file`, a copy just made of `len` bytes, for writing.
fn map_copy(file: &File, out: &Path, len: usize) -> Result<memmap2::MmapMut> {
    let io = |e| Error::io(out, e);
    // SAFETY: `file` is this merge's own temporary file, which nothing
    // else opens or resizes while the map lives.
    let map = unsafe { memmap2::MmapMut::map_mut(file) }.map_err(io)?;
    if map.len() != len {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the copy of the input is short",
        )));
    }
    Ok(map)
}

/// Copy the file `src` to `out` and let `patch` rewrite bytes of the copy
/// in place: the copy is made by the kernel (`copy_file_range` on Linux,
/// which shares extents where the filesystem can, so a reflink costs no
/// data I/O), then mapped writable, so only the pages `patch` writes are
/// read and written by this process. Any format whose edits keep its
/// length can merge this way; [`AdapterModel::merge`](crate::AdapterModel::merge)
/// does for safetensors, and wft-candle for GGUF.
///
/// The output appears atomically: the copy is a temporary file beside
/// `out` (with `src`'s permissions), synced, then renamed over `out`. On
/// any error, `patch`'s included, `out` is as it was.
///
/// # Errors
/// [`Error::OutputExists`] when `out` is `src` itself (through any path
/// or link), I/O errors (as `E`), and `patch`'s own errors.
pub fn copy_and_patch<E: From<Error>>(
    src: &Path,
    out: &Path,
    patch: impl FnOnce(&mut [u8]) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    if same_file(src, out) {
        return Err(Error::OutputExists {
            path: out.to_path_buf(),
            reason: format!(
                "is the input {} itself: the patch would replace what it reads",
                src.display()
            ),
        }
        .into());
    }
    let input = File::open(src).map_err(|e| Error::io(src, e))?;
    let meta = input.metadata().map_err(|e| Error::io(src, e))?;
    let len = usize::try_from(meta.len()).map_err(|_| Error::invalid(src.display().to_string(), "too large"))?;
    let tmp = temp_file_beside(out)?;
    copy_file(&input, len, tmp.as_file()).map_err(|e| Error::io(out, e))?;
    let mut map = map_copy(tmp.as_file(), out, len)?;
    patch(&mut map)?;
    map.flush().map_err(|e| Error::io(out, e))?;
    drop(map);
    std::fs::set_permissions(tmp.path(), meta.permissions()).map_err(|e| Error::io(out, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(out, e))?;
    tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    Ok(sync_dir(parent_dir(out))?)
}

/// All `len` bytes of `src` appended to `out`: by the kernel where it can,
/// by reading and writing otherwise.
fn copy_file(src: &File, len: usize, mut out: &File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if kernel_copy(src, 0..len, out)? {
        return Ok(());
    }
    let copied = std::io::copy(&mut std::io::Read::take(src, len as u64), &mut out)?;
    if copied as usize != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the input shrank while being read",
        ));
    }
    Ok(())
}

/// One shard: header, then every tensor in offset order.
fn write_shard(
    shard: &Shard,
    mut file: &File,
    out: &Path,
    replace: &mut Replace<'_>,
    tick: &mut dyn FnMut(),
) -> Result<()> {
    let io = |e| Error::io(out, e);
    file.write_all(&shard.bytes[..shard.data_start]).map_err(io)?;
    for name in shard.meta.offset_keys() {
        let Some(info) = shard.meta.info(&name) else { continue };
        let range = shard.range(info);
        let mut w = Counting {
            inner: BufWriter::with_capacity(1 << 20, file),
            n: 0,
        };
        if replace(&name, &mut w)? {
            w.flush().map_err(io)?;
            if w.n != range.len() {
                return Err(Error::invalid(
                    format!("replacement of tensor {name:?}"),
                    format!("{} bytes written, the tensor has {}", w.n, range.len()),
                ));
            }
        } else {
            drop(w);
            copy_range(shard, range.clone(), file).map_err(io)?;
        }
        shard.bytes.release(range);
        tick();
    }
    Ok(())
}

/// Copy a byte range of the shard's file to the end of `out`: file to file
/// in the kernel where the platform can (Linux `copy_file_range` with an
/// explicit source offset, so the shared source handle's position is never
/// used and concurrent merges from one [`TensorFile`] cannot interfere),
/// from the mapped bytes otherwise.
fn copy_range(shard: &Shard, range: std::ops::Range<usize>, mut out: &File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Bytes::Mapped(_, src) = &shard.bytes
        && kernel_copy(src, range.clone(), out)?
    {
        return Ok(());
    }
    out.write_all(&shard.bytes[range])
}

/// `copy_file_range(2)` from `src` at `range` to `out` at its position.
/// `Ok(false)` (nothing copied) where the kernel or filesystem cannot, so
/// the caller falls back to an ordinary write.
#[cfg(target_os = "linux")]
fn kernel_copy(src: &File, range: std::ops::Range<usize>, out: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut offset = range.start as libc::off64_t;
    let mut left = range.len();
    let mut first = true;
    while left > 0 {
        // SAFETY: both descriptors are open files borrowed for the call;
        // `offset` is a valid pointer; a null output offset means "at the
        // output's position", which only this merge writes.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut offset,
                out.as_raw_fd(),
                std::ptr::null_mut(),
                left.min(1 << 30),
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            let unsupported = matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP | libc::EPERM)
            );
            if first && unsupported {
                return Ok(false);
            }
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the checkpoint shrank while being read",
            ));
        }
        first = false;
        left -= n as usize;
    }
    Ok(true)
}

/// Refuse an output that is the base itself: its file, one of its shards,
/// its index or its folder, through any path or link. The merge would be
/// atomic, so nothing would be corrupted, but the original weights would
/// be gone.
fn refuse_input_as_output(base: &TensorFile, out: &Path) -> Result<()> {
    let mut inputs: Vec<&Path> = base.files();
    inputs.push(base.path());
    if base.is_sharded() {
        inputs.push(parent_dir(base.path()));
    }
    if inputs.iter().any(|input| same_file(input, out)) {
        return Err(Error::OutputExists {
            path: out.to_path_buf(),
            reason: format!(
                "is the base checkpoint {} itself: the merge would replace the weights it reads",
                base.path().display()
            ),
        });
    }
    Ok(())
}

/// Whether two paths name the same file or folder (after links).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}
