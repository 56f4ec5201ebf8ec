//! Image classification with a ViT: labelled images (an IDX image file with
//! its label file, or a folder of class sub-folders), training of the head
//! with a frozen, fully trained or adapted encoder, and accuracy.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use wft_adapter::Mt19937;
use wft_candle::ImageClassifier;

pub mod bench;

use crate::images::{Image, Preprocess, read_images, read_labelled};
use crate::train::{schedule, shuffle};
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

/// How to train.
#[derive(Debug, Clone)]
pub struct VisionConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak learning rate (linear warm-up over 10% of the steps, then decay).
    pub lr: f64,
    /// AdamW's weight decay.
    pub weight_decay: f64,
    /// Shuffling seed.
    pub seed: u64,
}

/// What training did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VisionHistory {
    /// The loss of each step's batch.
    pub losses: Vec<f32>,
    /// Seconds per step.
    pub step_secs: Vec<f64>,
}

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
    let mut opt = AdamW::new(
        clf.vars(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let bs = cfg.batch.max(1);
    let total = data.images.len().div_ceil(bs) * cfg.epochs;
    let warmup = (total / 10).max(1);
    let mut order: Vec<usize> = (0..data.images.len()).collect();
    let mut g = Mt19937::new(cfg.seed ^ 0x5eed);
    let mut history = VisionHistory::default();
    let mut step = 0;
    for _ in 0..cfg.epochs {
        shuffle(&mut order, &mut g);
        for chunk in order.chunks(bs) {
            let t = Instant::now();
            let images: Vec<Image> = chunk.iter().map(|&i| data.images[i].clone()).collect();
            let labels: Vec<u32> = chunk.iter().map(|&i| data.labels[i]).collect();
            let loss = candle_nn::loss::cross_entropy(&clf.logits(&prep.tensor(&images)?)?, &labels_tensor(&labels)?)?;
            let l = loss.to_scalar::<f32>()?;
            if !l.is_finite() {
                return Err(Error::Diverged { step });
            }
            opt.set_learning_rate(cfg.lr * schedule(step, total, warmup));
            opt.backward_step(&loss)?;
            history.losses.push(l);
            history.step_secs.push(t.elapsed().as_secs_f64());
            step += 1;
            on_step(step, total, l);
        }
    }
    Ok(history)
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

/// The fraction of `data` that `clf` classifies right.
///
/// # Errors
/// The model's errors.
pub fn accuracy(clf: &ImageClassifier, prep: &Preprocess, data: &Labelled, batch: usize) -> Result<f64> {
    if data.images.is_empty() {
        return Ok(f64::NAN);
    }
    let predicted = logits(clf, prep, &data.images, batch)?.argmax(1)?.to_vec1::<u32>()?;
    let right = predicted.iter().zip(&data.labels).filter(|(a, b)| a == b).count();
    Ok(right as f64 / data.images.len() as f64)
}
