//! Reading a mysqldump stream: its section headers (`-- Table structure for
//! table ...`), the row tuples of its `INSERT`s, and the filter that keeps
//! the preamble and the sections of the tables a restore chose.

use std::collections::BTreeSet;
use std::io::{self, Write};

use super::Counts;
use crate::source::lines::LineSink;

/// A backquoted name at the start of `s`; returns it and the bytes it spans.
fn backquoted(s: &[u8]) -> Option<(String, usize)> {
    let rest = s.strip_prefix(b"`")?;
    let mut name = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        match (rest[i], rest.get(i + 1)) {
            (b'`', Some(b'`')) => {
                name.push(b'`');
                i += 2;
            }
            (b'`', _) => return Some((String::from_utf8_lossy(&name).into_owned(), i + 2)),
            (b, _) => {
                name.push(b);
                i += 1;
            }
        }
    }
    None
}

/// What a section header of a mysqldump file introduces.
#[derive(Debug, PartialEq, Eq)]
enum Section {
    Table(String),
    View(String),
    Other,
}

fn section(l: &[u8]) -> Option<Section> {
    const TABLE: [&[u8]; 2] = [
        b"-- Table structure for table ",
        b"-- Dumping data for table ",
    ];
    const VIEW: [&[u8]; 2] = [
        b"-- Temporary table structure for view ",
        b"-- Final view structure for view ",
    ];
    const OTHER: [&[u8]; 3] = [
        b"-- Dumping events for database ",
        b"-- Dumping routines for database ",
        b"-- Dump completed",
    ];
    let named = |prefixes: [&[u8]; 2]| {
        prefixes
            .iter()
            .find_map(|p| l.strip_prefix(*p))
            .and_then(backquoted)
            .map(|(n, _)| n)
    };
    if let Some(n) = named(TABLE) {
        return Some(Section::Table(n));
    }
    if let Some(n) = named(VIEW) {
        return Some(Section::View(n));
    }
    OTHER
        .iter()
        .any(|p| l.starts_with(p))
        .then_some(Section::Other)
}

/// Counts the row tuples of every `INSERT` as the dump streams by.
#[derive(Default)]
pub(super) struct InsertCounter {
    pub(super) counts: Counts,
    table: Option<String>,
    in_string: bool,
    escaped: bool,
    depth: u32,
}

impl InsertCounter {
    /// Starts an `INSERT`; returns the part after `VALUES`.
    fn start<'l>(&mut self, l: &'l [u8]) -> Option<&'l [u8]> {
        let rest = [
            &b"INSERT INTO "[..],
            b"INSERT IGNORE INTO ",
            b"REPLACE INTO ",
        ]
        .iter()
        .find_map(|p| l.strip_prefix(*p))?;
        let (name, used) = backquoted(rest)?;
        let rest = &rest[used..];
        let at = rest.windows(6).position(|w| w == b"VALUES")?;
        self.counts.entry(name.clone()).or_default();
        self.table = Some(name);
        Some(&rest[at + 6..])
    }

    /// Follows tuples, strings and escapes until the statement's `;`.
    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'\'') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'\'' => self.in_string = true,
                b'(' => {
                    if self.depth == 0
                        && let Some(n) = self.table.as_ref().and_then(|t| self.counts.get_mut(t))
                    {
                        *n += 1;
                    }
                    self.depth += 1;
                }
                b')' => self.depth = self.depth.saturating_sub(1),
                b';' if self.depth == 0 => {
                    self.table = None;
                    return;
                }
                _ => {}
            }
        }
    }
}

impl LineSink for InsertCounter {
    fn line(&mut self, l: &[u8]) -> io::Result<()> {
        if self.table.is_some() {
            self.scan(l);
        } else if let Some(Section::Table(t)) = section(l) {
            self.counts.entry(t).or_default();
        } else if let Some(rest) = self.start(l) {
            self.scan(rest);
        }
        Ok(())
    }
}

/// Forwards the preamble and the sections of the chosen tables.
pub(super) struct SectionFilter<'w> {
    pub(super) tables: BTreeSet<String>,
    pub(super) keep: bool,
    pub(super) out: &'w mut dyn Write,
}

impl LineSink for SectionFilter<'_> {
    fn line(&mut self, l: &[u8]) -> io::Result<()> {
        if let Some(s) = section(l) {
            self.keep = matches!(s, Section::Table(t) if self.tables.contains(&t));
        }
        if self.keep {
            self.out.write_all(l)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::lines::feed_in_chunks;

    const DUMP: &str = "/*!40101 SET NAMES utf8mb4 */;\n\
--\n-- Table structure for table `a``b`\n--\n\nDROP TABLE IF EXISTS `a``b`;\nCREATE TABLE `a``b` (id int);\n\
--\n-- Dumping data for table `a``b`\n--\n\nLOCK TABLES `a``b` WRITE;\n\
INSERT INTO `a``b` VALUES (1,'x(y'),(2,'it\\'s; (ok)'),\n(3,NULL);\nUNLOCK TABLES;\n\
--\n-- Table structure for table `empty`\n--\n\nCREATE TABLE `empty` (id int);\n\
--\n-- Dumping data for table `empty`\n--\n\n\
--\n-- Table structure for table `c`\n--\n\nCREATE TABLE `c` (id int);\n\
--\n-- Dumping data for table `c`\n--\n\nINSERT INTO `c` VALUES\n(1),\n(2);\nINSERT INTO `c` VALUES (3);\n\
--\n-- Dumping routines for database 'd'\n--\nCREATE PROCEDURE p() SELECT 1;\n";

    fn feed<S: LineSink>(sink: S, chunk: usize) -> S {
        feed_in_chunks(sink, DUMP, chunk)
    }

    #[test]
    fn counts_insert_tuples_with_quotes_parens_and_line_breaks() {
        for chunk in [1, 5, 4096] {
            let c = feed(InsertCounter::default(), chunk);
            let want: Counts = [("a`b".into(), 3), ("c".into(), 3), ("empty".into(), 0)].into();
            assert_eq!(c.counts, want, "chunk {chunk}");
        }
    }

    #[test]
    fn filter_keeps_preamble_and_chosen_table_sections() {
        let mut out = Vec::new();
        feed(
            SectionFilter {
                tables: ["c".to_string()].into(),
                keep: true,
                out: &mut out,
            },
            3,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("/*!40101 SET NAMES"), "{out}");
        assert!(
            out.contains("CREATE TABLE `c`") && out.contains("VALUES (3)"),
            "{out}"
        );
        for unwanted in ["`a``b`", "`empty`", "PROCEDURE"] {
            assert!(!out.contains(unwanted), "{unwanted} kept: {out}");
        }
    }
}
