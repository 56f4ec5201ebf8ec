//! Image input: PNG, JPEG and IDX (plain and gzipped) read as RGB, grayscale
//! expanded, resized only when the size differs, normalised; bad files are
//! `Error::Image` and nothing else. The real ViT through `wft-train embed
//! --images` gives onnxruntime's features for a PNG of the reference image.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use image::{GrayImage, ImageFormat, Rgb, RgbImage};
use wft_train::Error;
use wft_train::images::{Image, Preprocess, read_images, read_labelled, read_labels};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

fn gzip(bytes: &[u8]) -> R<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes)?;
    Ok(e.finish()?)
}

fn is_image_error(r: wft_train::Result<Vec<Image>>, what: &str) {
    match r {
        Err(Error::Image { reason, .. }) => eprintln!("{what}: {reason}"),
        other => panic!("{what}: expected Error::Image, got {other:?}"),
    }
}

#[test]
fn png_jpeg_and_idx_read_as_rgb() -> R {
    let dir = tempfile::tempdir()?;
    let rgb = RgbImage::from_fn(7, 5, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 200]));
    let png = dir.path().join("a.png");
    rgb.save_with_format(&png, ImageFormat::Png)?;
    assert_eq!(read_images(&png)?, vec![Image { rgb: rgb.clone() }]);
    // Grayscale is expanded to RGB.
    let gray = GrayImage::from_fn(4, 3, |x, y| image::Luma([(x * 50 + y) as u8]));
    let gpng = dir.path().join("g.png");
    gray.save_with_format(&gpng, ImageFormat::Png)?;
    let read = read_images(&gpng)?;
    assert_eq!(read[0].rgb.dimensions(), (4, 3));
    assert!(read[0].rgb.enumerate_pixels().all(|(x, y, p)| {
        let v = (x * 50 + y) as u8;
        p.0 == [v, v, v]
    }));
    // JPEG decodes (lossy: the size and the rough colour).
    let jpg = dir.path().join("a.jpg");
    RgbImage::from_pixel(16, 8, Rgb([200, 30, 30])).save_with_format(&jpg, ImageFormat::Jpeg)?;
    let j = read_images(&jpg)?;
    assert_eq!(j[0].rgb.dimensions(), (16, 8));
    assert!(j[0].rgb.get_pixel(3, 3).0[0] > 150);
    // IDX, plain and gzipped: one image per entry; labels beside them.
    let data: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
    let plain = dir.path().join("x-idx3-ubyte");
    std::fs::write(&plain, idx(&[3, 4, 5], &data))?;
    let gz = dir.path().join("x-idx3-ubyte.gz");
    std::fs::write(&gz, gzip(&idx(&[3, 4, 5], &data))?)?;
    for f in [&plain, &gz] {
        let images = read_images(f)?;
        assert_eq!(images.len(), 3);
        assert_eq!(images[2].rgb.dimensions(), (5, 4));
        assert_eq!(images[2].rgb.get_pixel(1, 2).0, [40 + 11; 3]);
    }
    let labels = dir.path().join("y-idx1-ubyte.gz");
    std::fs::write(&labels, gzip(&idx(&[3], &[7, 1, 9]))?)?;
    assert_eq!(read_labels(&labels)?, vec![7, 1, 9]);
    let (x, y) = read_labelled(&gz, &labels)?;
    assert_eq!((x.len(), y.len()), (3, 3));
    Ok(())
}

#[test]
fn images_at_the_model_size_go_in_unresized() -> R {
    let prep = Preprocess {
        size: (4, 6),
        mean: [0.5, 0.25, 0.0],
        std: [0.5, 0.25, 2.0],
    };
    let rgb = RgbImage::from_fn(6, 4, |x, y| Rgb([(x * 40) as u8, (y * 60) as u8, 255]));
    let t = prep.tensor(&[Image { rgb: rgb.clone() }])?;
    assert_eq!(t.dims(), &[1, 3, 4, 6]);
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    for c in 0..3 {
        for (i, p) in rgb.pixels().enumerate() {
            let want = (f32::from(p.0[c]) / 255.0 - prep.mean[c]) / prep.std[c];
            assert_eq!(v[c * 24 + i], want);
        }
    }
    // Another size is resized to the model's.
    let small = RgbImage::from_pixel(3, 2, Rgb([255, 0, 0]));
    let t = prep.tensor(&[Image { rgb: small }])?;
    assert_eq!(t.dims(), &[1, 3, 4, 6]);
    assert!((t.get(0)?.get(0)?.mean_all()?.to_scalar::<f32>()? - 1.0).abs() < 1e-5);
    Ok(())
}

/// A PNG whose IHDR claims `w × h`, with a valid CRC and no image data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut b = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut chunk = b"IHDR".to_vec();
    chunk.extend(w.to_be_bytes());
    chunk.extend(h.to_be_bytes());
    chunk.extend([8, 2, 0, 0, 0]);
    let mut crc = flate2::Crc::new();
    crc.update(&chunk);
    b.extend(13u32.to_be_bytes());
    b.extend(&chunk);
    b.extend(crc.sum().to_be_bytes());
    b
}

#[test]
fn bad_image_files_are_image_errors() -> R {
    let dir = tempfile::tempdir()?;
    let write = |name: &str, bytes: &[u8]| -> R<PathBuf> {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes)?;
        Ok(p)
    };
    let good = dir.path().join("good.png");
    RgbImage::from_pixel(32, 32, Rgb([1, 2, 3])).save_with_format(&good, ImageFormat::Png)?;
    let bytes = std::fs::read(&good)?;
    is_image_error(
        read_images(&write("cut.png", &bytes[..bytes.len() / 2])?),
        "a truncated PNG",
    );
    let mut corrupt = bytes.clone();
    for b in corrupt.iter_mut().skip(40).take(20) {
        *b ^= 0x5a;
    }
    is_image_error(read_images(&write("corrupt.png", &corrupt)?), "a corrupt PNG");
    is_image_error(read_images(&write("zero.png", &png_header(0, 0))?), "a zero-sized PNG");
    is_image_error(
        read_images(&write("huge.png", &png_header(100_000, 100_000))?),
        "an enormous PNG",
    );
    is_image_error(read_images(&write("empty.png", &[])?), "an empty file");
    is_image_error(read_images(&write("text.png", b"not an image at all")?), "not an image");
    is_image_error(read_images(Path::new("/nonexistent/x.png")), "a missing file");
    // IDX headers that disagree with the length, or with themselves.
    let data = vec![0u8; 2 * 3 * 3];
    is_image_error(
        read_images(&write("short-idx3", &idx(&[3, 3, 3], &data))?),
        "an IDX file too short",
    );
    is_image_error(
        read_images(&write("long-idx3", &idx(&[1, 3, 3], &data))?),
        "an IDX file too long",
    );
    is_image_error(
        read_images(&write("zero-idx3", &idx(&[2, 0, 3], &[]))?),
        "zero-sized IDX images",
    );
    is_image_error(
        read_images(&write("huge-idx3", &idx(&[u32::MAX, u32::MAX, u32::MAX], &[]))?),
        "an IDX header of 2^96 bytes",
    );
    is_image_error(
        read_images(&write("gz-cut", &gzip(&idx(&[2, 3, 3], &data))?[..20])?),
        "a truncated gzip",
    );
    // Labels that disagree with the images.
    let images = write("x-idx3", &idx(&[2, 3, 3], &data))?;
    let labels = write("y-idx1", &idx(&[3], &[1, 2, 3]))?;
    assert!(matches!(read_labelled(&images, &labels), Err(Error::Image { .. })));
    assert!(matches!(
        read_labels(&write("bad-idx1", &idx(&[5], &[1, 2]))?),
        Err(Error::Image { .. })
    ));
    // The labels of an image file are refused (3 dims, not 1).
    assert!(matches!(read_labels(&images), Err(Error::Image { .. })));
    Ok(())
}

fn vit_dir(test: &str) -> Option<PathBuf> {
    wft_test_support::fetched(
        test,
        "WFT_VIT",
        ".cache/vit/dinov2-vits14",
        "model.safetensors",
        "fetch-vit",
    )
}

/// `wft-train embed --images` on a PNG of the reference script's image 0
/// (224 × 224, so it goes in unresized): onnxruntime's CLS token.
#[test]
fn embed_images_gives_onnxruntime_features() -> R {
    let Some(model) = vit_dir("embed_images_gives_onnxruntime_features") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    // scripts/make_dinov2_references.py's image 0.
    let img = RgbImage::from_fn(224, 224, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let v = |c: usize| ((x * 3 + y * (5 + 2 * c) + (x * y) % 7) % 256) as u8;
        Rgb([v(0), v(1), v(2)])
    });
    let png = dir.path().join("zero.png");
    img.save_with_format(&png, ImageFormat::Png)?;
    let out = Command::new(env!("CARGO_BIN_EXE_wft-train"))
        .args(["embed", "--model"])
        .arg(&model)
        .arg("--images")
        .arg(&png)
        .arg(&png)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 2);
    let reference = candle_core::safetensors::load(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wft-candle/tests/fixtures/dinov2/onnxruntime.safetensors"),
        &candle_core::Device::Cpu,
    )?;
    let want = reference.get("cls").ok_or("cls")?.get(0)?.to_vec1::<f32>()?;
    let got: Vec<f32> = serde_json::from_value(lines[0]["cls"].clone())?;
    assert_eq!(got.len(), 384);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-3 * scale, "max error {err} of {scale}");
    assert_eq!(lines[0], lines[1]);
    // A ViT folder wants images, not sentences.
    let bad = Command::new(env!("CARGO_BIN_EXE_wft-train"))
        .args(["embed", "--model"])
        .arg(&model)
        .args(["--sentences", "x.json"])
        .output()?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--images"));
    Ok(())
}
