//! Exclude (and restore include) patterns, matched fast however many there are.
//!
//! `globset::GlobSet` compiles every pattern it cannot reduce to a literal,
//! prefix or extension test into one regex set: 100,000 patterns such as
//! `**/build7/*.o` took 35 s and 2 GB to build, and `*tmp7*` failed to build
//! at all. Up to [`SMALL`] patterns still go to one `GlobSet` (fastest to
//! match). A larger list is indexed instead: each pattern is parsed up front
//! (so a bad one is reported at once) and keyed by a short window of the
//! longest literal run every match must contain, the window its fewest
//! fellow patterns share. A name or path is scanned for keys (a hash lookup
//! per position and key length, at most [`WINDOW`]), a candidate's whole
//! literal is confirmed with `memmem`, and only then is the pattern tested,
//! with its own matcher compiled the first time it is needed. Patterns with
//! no literal (`*`, `?*`) are always tested. Aho-Corasick would find the
//! literals in one pass, but its automaton took seconds to build for
//! 100,000 patterns (a quadratic state shuffle).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// Compiled exclude patterns.
pub struct ExcludeSet {
    by_name: Patterns,
    by_path: Patterns,
}

impl ExcludeSet {
    /// Compiles patterns: with a `/` a pattern matches the absolute path, without
    /// one it matches an entry's name at any depth (like restic and .gitignore).
    ///
    /// # Errors
    /// An invalid glob, named.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let (mut by_name, mut by_path) = (Vec::new(), Vec::new());
        for p in patterns {
            let g = Glob::new(p)
                .map_err(|e| Error::invalid(format!("invalid exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                by_path.push((p.as_str(), g));
            } else {
                by_name.push((p.as_str(), g));
            }
        }
        Ok(Self {
            by_name: Patterns::new(by_name)?,
            by_path: Patterns::new(by_path)?,
        })
    }

    /// Whether `path` (with final component `name`) is excluded.
    pub fn is_excluded(&self, path: &Path, name: &OsStr) -> bool {
        self.by_name.is_match(name.as_bytes()) || self.by_path.is_match(path.as_os_str().as_bytes())
    }
}

/// Lists up to this long are matched by one `GlobSet`.
const SMALL: usize = 256;
/// The longest key taken from a literal.
const WINDOW: usize = 8;

/// One group of patterns (by name, or by path).
enum Patterns {
    Small(GlobSet),
    Indexed(Indexed),
}

struct Indexed {
    globs: Vec<Glob>,
    /// Each pattern's required literal (empty: none).
    literals: Vec<Box<[u8]>>,
    matchers: Vec<OnceLock<GlobMatcher>>,
    /// Patterns by key (a window of their literal).
    by_key: std::collections::HashMap<Box<[u8]>, Vec<u32>>,
    /// The key lengths present, shortest first.
    key_lengths: Vec<usize>,
    /// Patterns with no literal: tested every time.
    always: Vec<u32>,
}

/// The longest run of characters a match of `pattern` must contain
/// literally. Wildcards, escapes, anything inside `[...]` or `{...}`, and a
/// `/` beside `**` (which matches zero directories too) end a run.
fn required_literal(pattern: &str) -> &str {
    let b = pattern.as_bytes();
    // A class that opens with `]` holds it literally: too subtle to index.
    if ["[]", "[!]", "[^]"].iter().any(|t| pattern.contains(t)) {
        return "";
    }
    let mut literal = vec![true; b.len()];
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                literal[i] = false;
                if let Some(l) = literal.get_mut(i + 1) {
                    *l = false;
                }
                i += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                literal[i] = false;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                literal[i] = false;
            }
            b'*' => {
                literal[i] = false;
                if b.get(i + 1) == Some(&b'*') {
                    if i > 0 && b[i - 1] == b'/' {
                        literal[i - 1] = false;
                    }
                    if b.get(i + 2) == Some(&b'/') {
                        literal[i + 2] = false;
                    }
                }
            }
            b'?' => literal[i] = false,
            _ if depth > 0 => literal[i] = false,
            _ => {}
        }
        i += 1;
    }
    let (mut best, mut run) = ((0, 0), 0);
    for (i, &l) in literal.iter().enumerate() {
        if !l {
            run = i + 1;
        } else if i + 1 - run > best.1 - best.0 {
            best = (run, i + 1);
        }
    }
    // Runs are cut at ASCII bytes only, so the bounds are char boundaries.
    &pattern[best.0..best.1]
}

impl Patterns {
    fn new(patterns: Vec<(&str, Glob)>) -> Result<Self> {
        if patterns.len() <= SMALL {
            let mut b = GlobSetBuilder::new();
            for (_, g) in patterns {
                b.add(g);
            }
            return b
                .build()
                .map(Self::Small)
                .map_err(|e| Error::invalid(format!("invalid exclude patterns: {e}")));
        }
        Ok(Self::Indexed(Indexed::new(patterns)))
    }

    fn is_match(&self, text: &[u8]) -> bool {
        match self {
            Self::Small(set) => set.is_match(OsStr::from_bytes(text)),
            Self::Indexed(i) => i.is_match(text),
        }
    }
}

/// The windows of `lit` a key may be: all of it, or every `WINDOW` bytes.
fn windows(lit: &[u8]) -> impl Iterator<Item = &[u8]> {
    lit.windows(WINDOW.min(lit.len()).max(1))
}

impl Indexed {
    fn new(patterns: Vec<(&str, Glob)>) -> Self {
        let literals: Vec<Box<[u8]>> = patterns
            .iter()
            .map(|(text, _)| required_literal(text).as_bytes().into())
            .collect();
        // How many patterns each window occurs in, to pick the rarest.
        let mut shared: std::collections::HashMap<&[u8], u32> = Default::default();
        for lit in literals.iter().filter(|l| !l.is_empty()) {
            let mut seen: Vec<&[u8]> = windows(lit).collect();
            seen.sort_unstable();
            seen.dedup();
            for w in seen {
                *shared.entry(w).or_default() += 1;
            }
        }
        let mut by_key: std::collections::HashMap<Box<[u8]>, Vec<u32>> = Default::default();
        let mut always = Vec::new();
        for (i, lit) in literals.iter().enumerate() {
            let n = u32::try_from(i).expect("fewer than 2^32 patterns");
            match windows(lit)
                .filter(|_| !lit.is_empty())
                .min_by_key(|w| shared[w])
            {
                Some(key) => by_key.entry(key.into()).or_default().push(n),
                None => always.push(n),
            }
        }
        let mut key_lengths: Vec<usize> = by_key.keys().map(|k| k.len()).collect();
        key_lengths.sort_unstable();
        key_lengths.dedup();
        Self {
            matchers: (0..patterns.len()).map(|_| OnceLock::new()).collect(),
            globs: patterns.into_iter().map(|(_, g)| g).collect(),
            literals,
            by_key,
            key_lengths,
            always,
        }
    }

    fn test(&self, i: u32, text: &[u8]) -> bool {
        let i = i as usize;
        let lit = &self.literals[i];
        (lit.is_empty() || memchr::memmem::find(text, lit).is_some())
            && self.matchers[i]
                .get_or_init(|| self.globs[i].compile_matcher())
                .is_match(OsStr::from_bytes(text))
    }

    fn is_match(&self, text: &[u8]) -> bool {
        if self.always.iter().any(|&i| self.test(i, text)) {
            return true;
        }
        (0..text.len()).any(|start| {
            self.key_lengths
                .iter()
                .take_while(|&&k| start + k <= text.len())
                .filter_map(|&k| self.by_key.get(&text[start..start + k]))
                .any(|list| list.iter().any(|&i| self.test(i, text)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literals_are_runs_outside_wildcards_classes_and_alternations() {
        assert_eq!(required_literal("*.tmp"), ".tmp");
        assert_eq!(required_literal("**/build7/*.o"), "build7/");
        assert_eq!(required_literal("x/**/y"), "x");
        assert_eq!(required_literal("a{bcdef,g}hi"), "hi");
        assert_eq!(required_literal("[abcdef]xy"), "xy");
        assert_eq!(required_literal("ab\\*cdefg"), "cdefg");
        assert_eq!(required_literal("[]ab]cd"), "");
        assert_eq!(required_literal("*"), "");
        assert_eq!(required_literal("né?e"), "né");
    }

    #[test]
    fn a_hundred_thousand_patterns_build_and_match_fast() {
        let mut patterns: Vec<String> = (0..50_000).map(|i| format!("**/build{i}/*.o")).collect();
        patterns.extend((0..50_000).map(|i| format!("*tmp{i}*")));
        let start = std::time::Instant::now();
        let set = ExcludeSet::new(&patterns).unwrap();
        for i in 0..2000 {
            let p = format!("/src/build{i}x/f{i}.o");
            assert!(!set.is_excluded(Path::new(&p), OsStr::new("f.o")));
        }
        assert!(set.is_excluded(Path::new("/src/build42/x.o"), OsStr::new("x.o")));
        assert!(set.is_excluded(Path::new("/a/mytmp77.bak"), OsStr::new("mytmp77.bak")));
        assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
    }

    fn glob_text() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("*".to_string()),
            Just("?".to_string()),
            Just("**/".to_string()),
            Just("/**".to_string()),
            Just("[ab]".to_string()),
            Just("{a,bc}".to_string()),
            "[abc./]{1,3}",
        ];
        proptest::collection::vec(atom, 1..5).prop_map(|v| v.concat())
    }

    proptest! {
        /// The index gives the same answers as one `GlobSet` of the same patterns.
        #[test]
        fn agrees_with_globset(
            patterns in proptest::collection::vec(glob_text(), 1..6),
            names in proptest::collection::vec("[abc./]{0,8}", 1..20),
        ) {
            let mut b = globset::GlobSetBuilder::new();
            let mut valid = Vec::new();
            for p in &patterns {
                if let Ok(g) = Glob::new(p) {
                    b.add(g);
                    valid.push(p.clone());
                }
            }
            let reference = b.build().unwrap();
            let ours = Indexed::new(valid.iter().map(|p| (p.as_str(), Glob::new(p).unwrap())).collect());
            // Walked paths never have `.` or `..` components (and GlobSet's
            // suffix strategies see no file name in them, unlike its matchers).
            for n in names.iter().filter(|n| !n.split('/').any(|c| c == "." || c == "..")) {
                prop_assert_eq!(ours.is_match(n.as_bytes()), reference.is_match(n), "{:?} on {:?}", valid, n);
            }
        }
    }
}
