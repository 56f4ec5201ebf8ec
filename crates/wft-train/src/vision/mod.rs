//! Image classification with a ViT: labelled images (an IDX image file with
//! its label file, or a folder of class sub-folders), training of the head
//! with a frozen, fully trained or adapted encoder, and accuracy.

use std::path::Path;

use candle_core::{Device, Tensor};
use wft_candle::ImageClassifier;

pub mod bench;

use crate::images::{Image, Preprocess, read_images, read_labelled};
use crate::{Error, Result};

/// Images with their classes.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// The images.
    pub images: Vec<Image>,
    /// Each image's class, an index into `classes`.
    pub labels: Vec<u32>,
    /// The class names (an IDX label file's classes are `0`, `1`, …).
    pub classes: Vec<String>,
}

impl Labelled {
    /// An IDX image file and its IDX label file.
    ///
    /// # Errors
    /// As [`read_labelled`]; [`Error::Data`] for an empty set.
    pub fn from_idx(images: &Path, labels: &Path) -> Result<Self> {
        let (images, labels) = read_labelled(images, labels)?;
        let classes = labels.iter().max().map_or(0, |&m| usize::from(m) + 1);
        if images.is_empty() {
            return Err(Error::Data("no images".into()));
        }
        Ok(Labelled {
            images,
            labels: labels.into_iter().map(u32::from).collect(),
            classes: (0..classes).map(|c| c.to_string()).collect(),
        })
    }

    /// A folder whose sub-folders are the classes (sorted by name), each
    /// holding PNG or JPEG files (sorted by name).
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable folders, [`Error::Data`] for fewer than
    /// two classes or a class without images, and [`read_images`]' errors.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let list = |d: &Path| -> Result<Vec<std::path::PathBuf>> {
            let mut v = std::fs::read_dir(d)
                .map_err(|e| Error::Io(format!("{}: {e}", d.display())))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| Error::Io(format!("{}: {e}", d.display())))?;
            v.sort();
            Ok(v)
        };
        let classes: Vec<_> = list(dir)?.into_iter().filter(|p| p.is_dir()).collect();
        if classes.len() < 2 {
            return Err(Error::Data(format!(
                "{}: {} class folders; a classification needs two or more",
                dir.display(),
                classes.len()
            )));
        }
        let (mut images, mut labels, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for (c, class) in classes.iter().enumerate() {
            let files: Vec<_> = list(class)?.into_iter().filter(|p| p.is_file()).collect();
            if files.is_empty() {
                return Err(Error::Data(format!("{}: no images", class.display())));
            }
            for f in files {
                for image in read_images(&f)? {
                    images.push(image);
                    labels.push(c as u32);
                }
            }
            names.push(
                class
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            );
        }
        Ok(Labelled {
            images,
            labels,
            classes: names,
        })
    }

    /// Labelled images from `--*-images FILE --*-labels FILE` (IDX) or a
    /// class folder, whichever was given.
    ///
    /// # Errors
    /// [`Error::Usage`] when neither or both are given; the readers' errors.
    pub fn from_args(images: Option<&Path>, labels: Option<&Path>, folder: Option<&Path>) -> Result<Self> {
        match (images, labels, folder) {
            (Some(i), Some(l), None) => Labelled::from_idx(i, l),
            (None, None, Some(d)) => Labelled::from_folder(d),
            _ => Err(Error::Usage(
                "give an IDX image file with its label file, or a folder of class folders".into(),
            )),
        }
    }
}

/// How [`train`] optimises.
pub type VisionConfig = crate::train::Optimization;

/// What training did.
pub type VisionHistory = crate::train::Steps;

pub(crate) fn labels_tensor(labels: &[u32]) -> Result<Tensor> {
    Ok(Tensor::from_vec(labels.to_vec(), labels.len(), &Device::Cpu)?)
}

/// Train `clf`'s variables (its head, and its encoder's adapters or weights)
/// on `data`; `on_step(step, total, loss)` runs after every step.
///
/// # Errors
/// [`Error::Data`] for a label outside the head's classes,
/// [`Error::Diverged`] when the loss is not finite, and the model's errors.
pub fn train(
    clf: &ImageClassifier,
    prep: &Preprocess,
    data: &Labelled,
    cfg: &VisionConfig,
    on_step: &mut dyn FnMut(usize, usize, f32),
) -> Result<VisionHistory> {
    if let Some(&bad) = data.labels.iter().find(|&&l| l as usize >= clf.classes()) {
        return Err(Error::Data(format!(
            "label {bad} for a head of {} classes",
            clf.classes()
        )));
    }
    crate::train::optimize(clf.vars(), data.images.len(), cfg, on_step, |chunk| {
        let images: Vec<&Image> = chunk.iter().map(|&i| &data.images[i]).collect();
        let labels: Vec<u32> = chunk.iter().map(|&i| data.labels[i]).collect();
        let loss = candle_nn::loss::cross_entropy(&clf.logits(&prep.tensor(&images)?)?, &labels_tensor(&labels)?)?;
        Ok((loss.to_scalar::<f32>()?, loss.backward()?))
    })
}

/// Logits (`images × classes`) of `images`, `batch` at a time, without a
/// graph (each batch's is dropped as soon as it is computed: an adapted
/// encoder would otherwise keep every batch's activations alive).
///
/// # Errors
/// The model's errors.
pub fn logits(clf: &ImageClassifier, prep: &Preprocess, images: &[Image], batch: usize) -> Result<Tensor> {
    let parts = images
        .chunks(batch.max(1))
        .map(|c| Ok(clf.logits(&prep.tensor(c)?)?.detach()))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// Whether `clf` classifies each image of `data` right, in order.
///
/// # Errors
/// The model's errors.
pub fn correct(clf: &ImageClassifier, prep: &Preprocess, data: &Labelled, batch: usize) -> Result<Vec<bool>> {
    if data.images.is_empty() {
        return Ok(Vec::new());
    }
    let predicted = logits(clf, prep, &data.images, batch)?.argmax(1)?.to_vec1::<u32>()?;
    Ok(predicted.iter().zip(&data.labels).map(|(a, b)| a == b).collect())
}

/// The fraction of `data` that `clf` classifies right (NaN for none).
///
/// # Errors
/// The model's errors.
pub fn accuracy(clf: &ImageClassifier, prep: &Preprocess, data: &Labelled, batch: usize) -> Result<f64> {
    let c = correct(clf, prep, data, batch)?;
    if c.is_empty() {
        return Ok(f64::NAN);
    }
    Ok(c.iter().filter(|c| **c).count() as f64 / c.len() as f64)
}

impl Labelled {
    /// Split off the images from `at` on (at most `n` of them) as a
    /// validation set; `self` keeps the first `at`.
    pub fn split_off(&mut self, at: usize, n: usize) -> Labelled {
        let at = at.min(self.images.len());
        let mut images = self.images.split_off(at);
        let mut labels = self.labels.split_off(at);
        images.truncate(n);
        labels.truncate(n);
        Labelled {
            images,
            labels,
            classes: self.classes.clone(),
        }
    }
}
