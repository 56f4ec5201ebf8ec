//! Which modules an adapter applies to, matched the way PEFT matches them.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// PEFT's `target_modules` / `exclude_modules`: a list of names or one
/// regular expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModuleSpec {
    /// A module matches when its path equals a name or ends in `.name`.
    Names(Vec<String>),
    /// A module matches when the whole path matches (Python's `re.fullmatch`).
    Regex(String),
}

impl ModuleSpec {
    /// Whether `path` matches.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a regular expression Rust's `regex` cannot
    /// compile (it has no look-around or back-references).
    pub fn matches(&self, path: &str) -> Result<bool> {
        Ok(match self {
            ModuleSpec::Names(names) => names.iter().any(|n| path == n || ends_with_component(path, n)),
            ModuleSpec::Regex(re) => full_regex(re)?.is_match(path),
        })
    }
}

fn ends_with_component(path: &str, name: &str) -> bool {
    path.strip_suffix(name).is_some_and(|head| head.ends_with('.'))
}

fn full_regex(re: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| Error::invalid("module regex", format!("{re:?}: {e}")))
}

/// PEFT's module selection: targets, exclusions and layer filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Targets {
    /// `target_modules`.
    pub target_modules: Option<ModuleSpec>,
    /// `exclude_modules`.
    pub exclude_modules: Option<ModuleSpec>,
    /// `layers_to_transform`: only these layer indices.
    pub layers_to_transform: Option<OneOrMany<usize>>,
    /// `layers_pattern`: the name of the layer list (e.g. `layers`, `h`).
    pub layers_pattern: Option<OneOrMany<String>>,
}

/// A PEFT field that holds one value or a list (kept as written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(v) => std::slice::from_ref(v),
            OneOrMany::Many(v) => v,
        }
    }
}

impl Targets {
    /// Whether the module at `path` is adapted.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a regular expression that does not compile.
    pub fn matches(&self, path: &str) -> Result<bool> {
        if let Some(ex) = &self.exclude_modules
            && ex.matches(path)?
        {
            return Ok(false);
        }
        let Some(t) = &self.target_modules else {
            return Ok(false);
        };
        if !t.matches(path)? {
            return Ok(false);
        }
        // Layer filters apply to name lists only, as in PEFT.
        if let (ModuleSpec::Names(_), Some(layers)) = (t, &self.layers_to_transform) {
            return Ok(self.layer_index(path).is_some_and(|i| layers.as_slice().contains(&i)));
        }
        Ok(true)
    }

    /// The layer index in `path`: the number after `.{pattern}.` (any
    /// component when no pattern is set).
    fn layer_index(&self, path: &str) -> Option<usize> {
        let comps: Vec<&str> = path.split('.').collect();
        comps.windows(2).find_map(|w| {
            let named = match &self.layers_pattern {
                Some(p) => p.as_slice().iter().any(|p| p == w[0]),
                None => true,
            };
            if named { w[1].parse().ok() } else { None }
        })
    }
}

/// The value for `path` in a PEFT pattern dict (`n_frequency_pattern`,
/// `rank_pattern`, …): the first key `k` whose regex `.*\.k$` matches the
/// path, or a key equal to the path; `None` otherwise.
///
/// # Errors
/// [`Error::Invalid`] for a key that is not a valid regular expression.
pub fn pattern_value<V: Copy>(pattern: &BTreeMap<String, V>, path: &str) -> Result<Option<V>> {
    for (k, v) in pattern {
        if path == k || full_regex(&format!(".*\\.(?:{k})"))?.is_match(path) {
            return Ok(Some(*v));
        }
    }
    Ok(None)
}

/// PEFT's proportional allocation: `max(1, round(dᵢ/Σd · n · layers))`
/// with Python's round-half-to-even, for each `(path, out·in)`.
pub fn proportional(sizes: &[(String, usize)], n: usize) -> BTreeMap<String, usize> {
    let total: usize = sizes.iter().map(|(_, s)| s).sum();
    let budget = (n * sizes.len()) as f64;
    sizes
        .iter()
        .map(|(p, s)| {
            let share = (*s as f64 / total as f64 * budget).round_ties_even();
            (p.clone(), (share as usize).max(1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whole_components_only() {
        let s = ModuleSpec::Names(vec!["q".into(), "attn.v".into()]);
        assert!(s.matches("layers.0.q").unwrap_or(false));
        assert!(s.matches("q").unwrap_or(false));
        assert!(!s.matches("layers.0.qq").unwrap_or(true));
        assert!(!s.matches("layers.0.xq").unwrap_or(true));
        assert!(s.matches("h.3.attn.v").unwrap_or(false));
    }

    #[test]
    fn regex_is_a_full_match() {
        let s = ModuleSpec::Regex(r"layers\.\d+\.(q|v)".into());
        assert!(s.matches("layers.12.q").unwrap_or(false));
        assert!(!s.matches("model.layers.12.q").unwrap_or(true));
        assert!(ModuleSpec::Regex("(?<=a)b".into()).matches("ab").is_err());
    }

    #[test]
    fn python_rounds_half_to_even() {
        // 1.5 → 2 and 2.5 → 2, as Python's round().
        let sizes = vec![("a".to_string(), 3), ("b".to_string(), 5)];
        let got = proportional(&sizes, 2);
        assert_eq!(got["a"], 2); // 3/8·4 = 1.5
        assert_eq!(got["b"], 2); // 5/8·4 = 2.5
    }
}
