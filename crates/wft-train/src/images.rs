//! Images for a ViT: PNG and JPEG files through the `image` crate, and IDX
//! files (MNIST's format, gzipped or not), turned into the normalised
//! `batch × 3 × height × width` tensor the model takes.
//!
//! Grayscale is expanded to RGB; an image is resized (Catmull-Rom) only when
//! its size differs from the model's, so one already at that size goes in
//! unresized; values are scaled to [0, 1] and normalised with the model's
//! mean and std (`preprocessor_config.json`).

use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{ImageReader, Limits, RgbImage};
use serde::Deserialize;

use crate::{Error, Result};

/// The largest side an image may have, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// The most bytes an image file, or a decompressed IDX file, may hold.
pub const MAX_BYTES: u64 = 1 << 30;

/// One RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The pixels, row by row, RGB.
    pub rgb: RgbImage,
}

/// So that [`Preprocess::tensor`] takes images or references to them.
impl AsRef<Image> for Image {
    fn as_ref(&self) -> &Image {
        self
    }
}

/// How a model wants its images: size and normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// `(height, width)` in pixels.
    pub size: (u32, u32),
    /// Per-channel mean, subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation, divided by afterwards.
    pub std: [f32; 3],
}

#[derive(Deserialize)]
struct PreprocessorFile {
    image_mean: [f32; 3],
    image_std: [f32; 3],
    size: SizeFile,
}

#[derive(Deserialize)]
struct SizeFile {
    height: u32,
    width: u32,
}

impl Preprocess {
    /// `preprocessor_config.json` in a model folder (`image_mean`,
    /// `image_std`, `size: {height, width}`).
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, [`Error::Data`] when it does not
    /// parse or holds a zero size or std.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let f: PreprocessorFile =
            serde_json::from_str(&text).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        if f.size.height == 0 || f.size.width == 0 || f.image_std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(Error::Data(format!(
                "{}: a zero size or a non-positive std",
                path.display()
            )));
        }
        Ok(Preprocess {
            size: (f.size.height, f.size.width),
            mean: f.image_mean,
            std: f.image_std,
        })
    }

    /// The normalised `batch × 3 × height × width` tensor of `images`,
    /// each resized to [`Preprocess::size`] only when it differs.
    ///
    /// # Errors
    /// candle's errors.
    pub fn tensor(&self, images: &[impl AsRef<Image>]) -> Result<Tensor> {
        let (h, w) = self.size;
        let plane = (h * w) as usize;
        let mut v = Vec::with_capacity(images.len() * 3 * plane);
        for image in images.iter().map(AsRef::as_ref) {
            let resized;
            let rgb = if image.rgb.dimensions() == (w, h) {
                &image.rgb
            } else {
                resized = image::imageops::resize(&image.rgb, w, h, FilterType::CatmullRom);
                &resized
            };
            for c in 0..3 {
                v.extend(
                    rgb.pixels()
                        .map(|p| (f32::from(p.0[c]) / 255.0 - self.mean[c]) / self.std[c]),
                );
            }
        }
        Ok(Tensor::from_vec(
            v,
            (images.len(), 3, h as usize, w as usize),
            &Device::Cpu,
        )?)
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The bytes of `path`, gunzipped when they start with gzip's magic; at
/// most [`MAX_BYTES`] either way.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| bad(path, e.to_string()))?;
    let mut raw = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| bad(path, e.to_string()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("gzip: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() as u64 > MAX_BYTES {
        return Err(bad(path, format!("more than {MAX_BYTES} bytes")));
    }
    Ok(bytes)
}

/// An IDX header: the element type must be `u8` (0x08); the dims.
fn idx(path: &Path, bytes: &[u8], ndim: usize) -> Result<(Vec<usize>, usize)> {
    let header = 4 + 4 * ndim;
    if bytes.len() < header || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(path, "not an IDX file (no 00 00 magic)"));
    }
    if bytes[2] != 0x08 || bytes[3] as usize != ndim {
        return Err(bad(
            path,
            format!(
                "an IDX file of type 0x{:02x} with {} dims; expected unsigned bytes with {ndim}",
                bytes[2], bytes[3]
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match count {
        Some(n) if header + n == bytes.len() => Ok((dims, header)),
        _ => Err(bad(
            path,
            format!(
                "the header says {dims:?} ({} bytes of data), the file has {}",
                count.map_or("too many".to_string(), |n| n.to_string()),
                bytes.len() - header
            ),
        )),
    }
}

/// Whether `path` holds an IDX file (gzipped or not), by its content.
fn is_idx(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0 && bytes[2] == 0x08
}

/// The images in `path`: one for a PNG or JPEG file, one per entry of an IDX
/// image file (`n × rows × cols` unsigned bytes, grayscale).
///
/// # Errors
/// [`Error::Image`] for files that cannot be read, are truncated or
/// corrupt, hold a zero-sized image or one with a side over [`MAX_SIDE`],
/// or an IDX header that disagrees with the file's length.
pub fn read_images(path: &Path) -> Result<Vec<Image>> {
    let bytes = read_bytes(path)?;
    if is_idx(&bytes) {
        let (dims, start) = idx(path, &bytes, 3)?;
        let (n, rows, cols) = (dims[0], dims[1], dims[2]);
        if rows == 0 || cols == 0 || rows > MAX_SIDE as usize || cols > MAX_SIDE as usize {
            return Err(bad(path, format!("{rows} × {cols} images")));
        }
        return (0..n)
            .map(|i| {
                let px = &bytes[start + i * rows * cols..start + (i + 1) * rows * cols];
                let rgb = RgbImage::from_fn(cols as u32, rows as u32, |x, y| {
                    let v = px[y as usize * cols + x as usize];
                    image::Rgb([v, v, v])
                });
                Ok(Image { rgb })
            })
            .collect();
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(path, e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_BYTES);
    reader.limits(limits);
    if reader.format().is_none() {
        return Err(bad(path, "neither PNG, JPEG nor IDX"));
    }
    let decoded = reader.decode().map_err(|e| bad(path, e.to_string()))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(bad(path, "an image of zero size"));
    }
    Ok(vec![Image { rgb: decoded.to_rgb8() }])
}

/// The labels in an IDX label file (`n` unsigned bytes).
///
/// # Errors
/// [`Error::Image`] for a file that cannot be read or whose header
/// disagrees with its length.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_bytes(path)?;
    let (_, start) = idx(path, &bytes, 1)?;
    Ok(bytes[start..].to_vec())
}

/// Labelled images: an IDX image file and its IDX label file.
///
/// # Errors
/// As [`read_images`] and [`read_labels`], and [`Error::Image`] when the two
/// counts differ.
pub fn read_labelled(images: &Path, labels: &Path) -> Result<(Vec<Image>, Vec<u8>)> {
    let x = read_images(images)?;
    let y = read_labels(labels)?;
    if x.len() != y.len() {
        return Err(bad(
            labels,
            format!("{} labels for {} images in {}", y.len(), x.len(), images.display()),
        ));
    }
    Ok((x, y))
}
