//! The Debian package-topic task (`data/debian-topics`), embedded in the
//! binary so that the demo needs no files beside the model.

use crate::{Error, Result};

/// One labelled description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Index into [`Dataset::labels`].
    pub label: usize,
    /// The one-line description.
    pub text: String,
}

/// Fixed train / validation / test splits and the label names.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Section names, sorted; a label is an index into this.
    pub labels: Vec<String>,
    /// Training split.
    pub train: Vec<Example>,
    /// Validation split (for choosing hyper-parameters).
    pub val: Vec<Example>,
    /// Test split (reported only).
    pub test: Vec<Example>,
}

const TRAIN: &str = include_str!("../../../data/debian-topics/train.tsv");
const VAL: &str = include_str!("../../../data/debian-topics/val.tsv");
const TEST: &str = include_str!("../../../data/debian-topics/test.tsv");

impl Dataset {
    /// The committed snapshot (14 Debian sections, 1750 / 378 / 392 rows).
    ///
    /// # Errors
    /// Never for the committed files; [`Error::Data`] if they were edited
    /// into something malformed.
    pub fn builtin() -> Result<Self> {
        Dataset::from_tsv(TRAIN, VAL, TEST)
    }

    /// Splits from `label<TAB>text` lines. The labels are the sorted set of
    /// the training split's; validation and test rows must use them.
    ///
    /// # Errors
    /// [`Error::Data`] for a line without a tab, an empty text, or a label
    /// not seen in training.
    pub fn from_tsv(train: &str, val: &str, test: &str) -> Result<Self> {
        let rows = |name: &str, text: &str| -> Result<Vec<(String, String)>> {
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| match l.split_once('\t') {
                    Some((label, t)) if !t.trim().is_empty() && !label.is_empty() => {
                        Ok((label.to_string(), t.to_string()))
                    }
                    _ => Err(Error::Data(format!("{name} line {}: expected `label<TAB>text`", i + 1))),
                })
                .collect()
        };
        let train = rows("train", train)?;
        let mut labels: Vec<String> = train.iter().map(|(l, _)| l.clone()).collect();
        labels.sort();
        labels.dedup();
        let index = |name: &str, rows: Vec<(String, String)>| -> Result<Vec<Example>> {
            rows.into_iter()
                .map(|(l, text)| match labels.binary_search(&l) {
                    Ok(label) => Ok(Example { label, text }),
                    Err(_) => Err(Error::Data(format!("{name}: label `{l}` does not occur in training"))),
                })
                .collect()
        };
        Ok(Dataset {
            train: index("train", train)?,
            val: index("val", rows("val", val)?)?,
            test: index("test", rows("test", test)?)?,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_snapshot_has_its_documented_counts() -> Result<()> {
        let d = Dataset::builtin()?;
        assert_eq!((d.train.len(), d.val.len(), d.test.len()), (1750, 378, 392));
        assert_eq!(d.labels.len(), 14);
        for split in [&d.train, &d.val, &d.test] {
            let mut counts = vec![0usize; d.labels.len()];
            split.iter().for_each(|e| counts[e.label] += 1);
            let (lo, hi) = (counts.iter().min(), counts.iter().max());
            assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{counts:?}");
        }
        Ok(())
    }

    #[test]
    fn malformed_rows_are_errors() {
        assert!(Dataset::from_tsv("a\tx\nno tab here\n", "", "").is_err());
        assert!(Dataset::from_tsv("a\tx\n", "b\ty\n", "").is_err());
        assert!(Dataset::from_tsv("a\t \n", "", "").is_err());
    }
}
