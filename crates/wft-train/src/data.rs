//! Labelled text sets: the Debian package-topic task (`data/debian-topics`),
//! embedded in the binary so that the demo needs no files beside the model,
//! and a user's own sets from `label<TAB>text` (or `label<TAB>text<TAB>text_b`
//! for sentence pairs) TSV files or JSON lines.

use std::path::Path;

use crate::{Error, Result};

/// One labelled text, or pair of texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Index into [`Dataset::labels`].
    pub label: usize,
    /// The text (the first of a pair).
    pub text: String,
    /// The second text of a sentence-pair task (BERT's segment B).
    pub pair: Option<String>,
}

/// Fixed train / validation / test splits and the label names.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Label names, sorted; a label is an index into this.
    pub labels: Vec<String>,
    /// Training split.
    pub train: Vec<Example>,
    /// Validation split (for choosing hyper-parameters).
    pub val: Vec<Example>,
    /// Test split (reported only).
    pub test: Vec<Example>,
}

/// One row before its label is indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The label's name.
    pub label: String,
    /// The text.
    pub text: String,
    /// The second text of a pair.
    pub pair: Option<String>,
}

const TRAIN: &str = include_str!("../../../data/debian-topics/train.tsv");
const VAL: &str = include_str!("../../../data/debian-topics/val.tsv");
const TEST: &str = include_str!("../../../data/debian-topics/test.tsv");

/// The file formats [`rows`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `label<TAB>text` or `label<TAB>text<TAB>text_b` lines.
    Tsv,
    /// One JSON object per line: `{"label": ..., "text": ..., "text_b": ...}`
    /// (`text_b` optional; a number label is read as its decimal string).
    JsonLines,
}

impl Format {
    /// By extension: `.jsonl`/`.json` are JSON lines, anything else TSV.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "json") => Format::JsonLines,
            _ => Format::Tsv,
        }
    }
}

/// The rows of one file's text; `name` is for messages. Every row must have
/// the same shape (all single texts, or all pairs).
///
/// # Errors
/// [`Error::Data`] for a row without a label or a text, a TSV line with more
/// than three columns, a JSON line that does not parse, or a file mixing
/// single texts and pairs.
pub fn rows(name: &str, text: &str, format: Format) -> Result<Vec<Row>> {
    let bad = |line: usize, what: &str| Error::Data(format!("{name} line {line}: {what}"));
    let mut out: Vec<Row> = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row = match format {
            Format::Tsv => {
                let cols: Vec<&str> = l.split('\t').collect();
                match cols.as_slice() {
                    [label, t] => Row {
                        label: label.to_string(),
                        text: t.to_string(),
                        pair: None,
                    },
                    [label, a, b] => Row {
                        label: label.to_string(),
                        text: a.to_string(),
                        pair: Some(b.to_string()),
                    },
                    _ => return Err(bad(i + 1, "expected `label<TAB>text` or `label<TAB>text<TAB>text_b`")),
                }
            }
            Format::JsonLines => {
                let v: serde_json::Value =
                    serde_json::from_str(l).map_err(|e| bad(i + 1, &format!("not JSON: {e}")))?;
                let label = match &v["label"] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return Err(bad(i + 1, "`label` must be a string or a number")),
                };
                let field = |k: &str| v[k].as_str().map(str::to_string);
                let text = field("text").ok_or_else(|| bad(i + 1, "`text` must be a string"))?;
                if !v["text_b"].is_null() && field("text_b").is_none() {
                    return Err(bad(i + 1, "`text_b` must be a string"));
                }
                Row {
                    label,
                    text,
                    pair: field("text_b"),
                }
            }
        };
        if row.label.is_empty() || row.text.trim().is_empty() || row.pair.as_ref().is_some_and(|b| b.trim().is_empty())
        {
            return Err(bad(i + 1, "an empty label or text"));
        }
        if out.first().is_some_and(|f| f.pair.is_some() != row.pair.is_some()) {
            return Err(bad(i + 1, "single texts and pairs mixed in one file"));
        }
        out.push(row);
    }
    Ok(out)
}

/// Read a whole file.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

impl Dataset {
    /// The committed snapshot (14 Debian sections, 1750 / 378 / 392 rows).
    ///
    /// # Errors
    /// Never for the committed files; [`Error::Data`] if they were edited
    /// into something malformed.
    pub fn builtin() -> Result<Self> {
        Dataset::from_tsv(TRAIN, VAL, TEST)
    }

    /// Splits from `label<TAB>text` (or `label<TAB>text<TAB>text_b`) lines.
    /// The labels are the sorted set of the training split's; validation
    /// and test rows must use them.
    ///
    /// # Errors
    /// As [`rows`], and [`Error::Data`] for a label not seen in training or
    /// splits of different shapes.
    pub fn from_tsv(train: &str, val: &str, test: &str) -> Result<Self> {
        Dataset::from_rows(
            rows("train", train, Format::Tsv)?,
            rows("val", val, Format::Tsv)?,
            rows("test", test, Format::Tsv)?,
        )
    }

    /// The splits in a folder: `train`, `val` and `test`, each `.tsv` or
    /// `.jsonl` (see [`Format`]).
    ///
    /// # Errors
    /// [`Error::Io`] for a missing or unreadable split, and as
    /// [`Dataset::from_tsv`].
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let split = |name: &str| -> Result<Vec<Row>> {
            for ext in ["tsv", "jsonl"] {
                let path = dir.join(format!("{name}.{ext}"));
                if path.is_file() {
                    return rows(&path.display().to_string(), &read_file(&path)?, Format::of(&path));
                }
            }
            Err(Error::Io(format!("{}: no {name}.tsv or {name}.jsonl", dir.display())))
        };
        Dataset::from_rows(split("train")?, split("val")?, split("test")?)
    }

    /// Index the rows' labels by the training split's sorted label set.
    ///
    /// # Errors
    /// [`Error::Data`] for a label not seen in training, an empty training
    /// split, or splits of different shapes.
    pub fn from_rows(train: Vec<Row>, val: Vec<Row>, test: Vec<Row>) -> Result<Self> {
        let mut labels: Vec<String> = train.iter().map(|r| r.label.clone()).collect();
        labels.sort();
        labels.dedup();
        if labels.is_empty() {
            return Err(Error::Data("the training split is empty".into()));
        }
        let pairs = train[0].pair.is_some();
        let index = |name: &str, rows: Vec<Row>| -> Result<Vec<Example>> {
            if rows.first().is_some_and(|r| r.pair.is_some() != pairs) {
                return Err(Error::Data(format!(
                    "{name}: pairs and single texts differ from the training split"
                )));
            }
            index_rows(name, rows, &labels)
        };
        Ok(Dataset {
            train: index("train", train)?,
            val: index("val", val)?,
            test: index("test", test)?,
            labels,
        })
    }

    /// Whether the examples are sentence pairs.
    pub fn is_pairs(&self) -> bool {
        self.train.first().is_some_and(|e| e.pair.is_some())
    }
}

/// The rows as examples whose labels index `labels`.
///
/// # Errors
/// [`Error::Data`] for a label that is not in `labels`.
pub fn index_rows(name: &str, rows: Vec<Row>, labels: &[String]) -> Result<Vec<Example>> {
    rows.into_iter()
        .map(|r| match labels.iter().position(|l| *l == r.label) {
            Some(label) => Ok(Example {
                label,
                text: r.text,
                pair: r.pair,
            }),
            None => Err(Error::Data(format!(
                "{name}: label `{}` is not one of the model's",
                r.label
            ))),
        })
        .collect()
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
        assert!(Dataset::from_tsv("a\tx\ty\tz\n", "", "").is_err());
        assert!(Dataset::from_tsv("a\tx\ty\na\tx\n", "", "").is_err());
        assert!(Dataset::from_tsv("a\tx\ty\n", "a\tx\n", "").is_err());
        assert!(Dataset::from_tsv("", "", "").is_err());
    }

    #[test]
    fn pairs_and_json_lines() -> Result<()> {
        let d = Dataset::from_tsv("yes\ta\tb\nno\tc\td\n", "no\te\tf\n", "")?;
        assert!(d.is_pairs());
        assert_eq!(d.labels, ["no", "yes"]);
        assert_eq!(
            d.val[0],
            Example {
                label: 0,
                text: "e".into(),
                pair: Some("f".into())
            }
        );
        let r = rows(
            "x",
            "{\"label\": 3, \"text\": \"t\"}\n\n{\"label\": \"b\", \"text\": \"u\"}\n",
            Format::JsonLines,
        )?;
        assert_eq!(
            (r[0].label.as_str(), r[1].text.as_str(), r[1].pair.as_ref()),
            ("3", "u", None)
        );
        for bad in [
            "{",
            "{\"text\": \"t\"}",
            "{\"label\": \"a\"}",
            "{\"label\": \"a\", \"text\": \"t\", \"text_b\": 1}",
        ] {
            assert!(rows("x", bad, Format::JsonLines).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn committed_suite_tasks_load() -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/debian-suite");
        for (task, pairs, classes) in [("use", false, 7), ("describes", true, 2), ("same-source", true, 2)] {
            let d = Dataset::from_dir(&root.join(task))?;
            assert_eq!((d.is_pairs(), d.labels.len()), (pairs, classes), "{task}");
            assert!(
                d.train.len() >= 1000 && d.val.len() >= 150 && d.test.len() >= 150,
                "{task}"
            );
        }
        Ok(())
    }
}
