//! Reading a plain `pg_dump` stream: its entries (`-- Name: ...; Type: ...`
//! headers), the rows of its `COPY` blocks, and the selection of entries a
//! table-level restore needs.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};

use super::super::lines::{LineSink, trim_newline};
use super::Counts;
use super::conn::ident;

/// One archive entry of a plain dump, from its `-- Name: ...` header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) index: usize,
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) schema: String,
}

/// What a line of a plain dump is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// Starts a new entry.
    Header,
    /// SQL (or a `COPY` start or end line).
    Sql,
    /// One row inside a `COPY ... FROM stdin` block.
    Row,
}

/// Follows the entries of a plain dump line by line. Entry 0 is the preamble.
#[derive(Default)]
pub(super) struct PgScanner {
    entry: Entry,
    in_copy: bool,
}

impl PgScanner {
    fn line(&mut self, l: &[u8]) -> Line {
        if self.in_copy {
            if trim_newline(l) == b"\\." {
                self.in_copy = false;
                return Line::Sql;
            }
            return Line::Row;
        }
        if let Some(mut e) = parse_header(l) {
            e.index = self.entry.index + 1;
            self.entry = e;
            return Line::Header;
        }
        if l.starts_with(b"-- PostgreSQL database dump complete") {
            self.entry = Entry {
                index: self.entry.index + 1,
                kind: "TRAILER".into(),
                ..Entry::default()
            };
            return Line::Header;
        }
        if l.starts_with(b"COPY ") && trim_newline(l).ends_with(b" FROM stdin;") {
            self.in_copy = true;
        }
        Line::Sql
    }
}

/// Parses `-- Name: N; Type: T; Schema: S; Owner: O` (or `-- Data for Name: ...`).
pub(super) fn parse_header(l: &[u8]) -> Option<Entry> {
    if !l.starts_with(b"-- ") {
        return None;
    }
    let l = std::str::from_utf8(trim_newline(l)).ok()?;
    let rest = l
        .strip_prefix("-- Name: ")
        .or_else(|| l.strip_prefix("-- Data for Name: "))?;
    let (name, rest) = rest.rsplit_once("; Type: ")?;
    let (kind, rest) = rest.split_once("; Schema: ")?;
    let schema = rest.split_once("; Owner: ").map_or(rest, |(s, _)| s);
    Some(Entry {
        index: 0,
        kind: kind.to_string(),
        name: name.to_string(),
        schema: schema.to_string(),
    })
}

/// Counts the rows of each `TABLE DATA` entry as the dump streams by. Rows
/// are tallied in a plain counter and keyed once per entry: a dump holds
/// millions of rows, so the per-row path must stay allocation-free.
#[derive(Default)]
pub(super) struct CopyCounter {
    scan: PgScanner,
    /// `schema.table` and rows of the `TABLE DATA` entry being read.
    current: Option<(String, u64)>,
    counts: Counts,
}

impl CopyCounter {
    /// Rows per table of everything seen so far.
    pub(super) fn into_counts(mut self) -> Counts {
        self.flush();
        self.counts
    }

    fn flush(&mut self) {
        if let Some((table, n)) = self.current.take() {
            *self.counts.entry(table).or_default() += n;
        }
    }
}

impl LineSink for CopyCounter {
    fn line(&mut self, l: &[u8]) -> io::Result<()> {
        match self.scan.line(l) {
            Line::Row => {
                if let Some((_, n)) = &mut self.current {
                    *n += 1;
                }
            }
            Line::Header => {
                self.flush();
                let e = &self.scan.entry;
                if e.kind == "TABLE DATA" {
                    self.current = Some((format!("{}.{}", e.schema, e.name), 0));
                }
            }
            Line::Sql => {}
        }
        Ok(())
    }
}

/// First pass of a selective restore: every entry with its SQL (data skipped).
#[derive(Default)]
pub(super) struct Planner {
    scan: PgScanner,
    pub(super) entries: Vec<(Entry, String)>,
}

/// SQL kept per entry for the selection; longer bodies are data, not DDL.
const BODY_CAP: usize = 64 * 1024;

impl LineSink for Planner {
    fn line(&mut self, l: &[u8]) -> io::Result<()> {
        let kind = self.scan.line(l);
        if kind == Line::Header || self.entries.is_empty() {
            self.entries.push((self.scan.entry.clone(), String::new()));
        }
        if kind == Line::Sql
            && let Some((_, body)) = self.entries.last_mut()
            && body.len() < BODY_CAP
        {
            body.push_str(&String::from_utf8_lossy(l));
        }
        Ok(())
    }
}

/// Second pass: forwards the chosen entries only.
pub(super) struct EntryFilter<'w> {
    pub(super) scan: PgScanner,
    pub(super) keep: HashSet<usize>,
    pub(super) out: &'w mut dyn Write,
}

impl LineSink for EntryFilter<'_> {
    fn line(&mut self, l: &[u8]) -> io::Result<()> {
        self.scan.line(l);
        if self.keep.contains(&self.scan.entry.index) {
            self.out.write_all(l)?;
        }
        Ok(())
    }
}

/// An identifier as pg_dump prints it (quoted unless plainly lower-case).
pub(super) fn pg_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain { s.to_string() } else { ident(s) }
}

/// The spellings of `schema.name` that pg_dump may print.
fn qualified(schema: &str, name: &str) -> [String; 2] {
    [
        format!("{}.{}", pg_ident(schema), pg_ident(name)),
        format!("{}.{}", ident(schema), ident(name)),
    ]
}

/// True when `body` contains `needle` followed by `next` (any of its bytes).
fn mentions(body: &str, needle: &str, next: &[u8]) -> bool {
    body.match_indices(needle).any(|(i, _)| {
        body.as_bytes()
            .get(i + needle.len())
            .is_some_and(|b| next.contains(b))
    })
}

/// Which entries restore the chosen tables, and notes on what is left out.
pub(super) fn select_entries(
    entries: &[(Entry, String)],
    tables: &BTreeSet<(String, String)>,
    fresh: bool,
) -> (HashSet<usize>, Vec<String>) {
    let refs = |body: &str, prefix: &str, next: &[u8]| {
        tables.iter().any(|(s, t)| {
            qualified(s, t)
                .iter()
                .any(|q| mentions(body, &format!("{prefix}{q}"), next))
        })
    };
    let owned: BTreeSet<(String, String)> = entries
        .iter()
        .filter(|(e, body)| match e.kind.as_str() {
            "SEQUENCE OWNED BY" => refs(body, "OWNED BY ", b"."),
            "SEQUENCE" => body.contains("ADD GENERATED") && refs(body, "ALTER TABLE ", b" \n"),
            _ => false,
        })
        .map(|(e, _)| (e.schema.clone(), e.name.clone()))
        .collect();
    let schemas: BTreeSet<&String> = tables.iter().map(|(s, _)| s).collect();
    let chosen = |schema: &str, name: &str| tables.contains(&(schema.into(), name.into()));
    let on_table = |e: &Entry| {
        tables
            .iter()
            .any(|(s, t)| *s == e.schema && e.name.starts_with(&format!("{t} ")))
    };
    let mut keep = HashSet::new();
    let mut notes = Vec::new();
    for (e, body) in entries {
        let (schema, name) = (e.schema.as_str(), e.name.as_str());
        let yes = match e.kind.as_str() {
            "" | "TRAILER" => true,
            "TABLE" | "TABLE DATA" => chosen(schema, name),
            "SCHEMA" => fresh && name != "public" && schemas.contains(&name.to_string()),
            "SEQUENCE" | "SEQUENCE OWNED BY" | "SEQUENCE SET" => {
                owned.contains(&(schema.into(), name.into()))
            }
            "DEFAULT" | "CONSTRAINT" | "TRIGGER" | "RULE" | "POLICY" | "ROW SECURITY" => {
                on_table(e)
            }
            "FK CONSTRAINT" if on_table(e) => {
                let ok = refs(body, "REFERENCES ", b"(");
                if !ok {
                    notes.push(format!(
                        "skip foreign key {name} (it references a table not restored)"
                    ));
                }
                ok
            }
            "INDEX" => refs(body, " ON ", b" ") || refs(body, " ON ONLY ", b" "),
            "ACL" | "COMMENT" => acl_target(name).is_some_and(|(obj, t)| match obj {
                "TABLE" => chosen(schema, t),
                "SEQUENCE" => owned.contains(&(schema.into(), t.into())),
                "COLUMN" => t.rsplit_once('.').is_some_and(|(t, _)| chosen(schema, t)),
                _ => false,
            }),
            _ => false,
        };
        if yes {
            keep.insert(e.index);
        }
    }
    (keep, notes)
}

/// `TABLE t`, `SEQUENCE s`, `COLUMN t.c` of an ACL or COMMENT entry.
fn acl_target(name: &str) -> Option<(&str, &str)> {
    name.split_once(' ')
}

#[cfg(test)]
mod tests {
    use super::super::super::lines::{LineWriter, feed_in_chunks};
    use super::*;

    const DUMP: &str = "SET x = 1;\n\
--\n-- Name: items; Type: TABLE; Schema: public; Owner: u\n--\n\nCREATE TABLE public.items (id integer);\n\
--\n-- Name: items_id_seq; Type: SEQUENCE; Schema: public; Owner: u\n--\n\nCREATE SEQUENCE public.items_id_seq;\n\
--\n-- Name: items_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: u\n--\n\nALTER SEQUENCE public.items_id_seq OWNED BY public.items.id;\n\
--\n-- Name: other; Type: TABLE; Schema: public; Owner: u\n--\n\nCREATE TABLE public.other (id integer);\n\
--\n-- Data for Name: items; Type: TABLE DATA; Schema: public; Owner: u\n--\n\nCOPY public.items (id) FROM stdin;\n1\n2\n-- Name: fake; Type: TABLE; Schema: public; Owner: u\n\\.\n\
--\n-- Data for Name: other; Type: TABLE DATA; Schema: public; Owner: u\n--\n\nCOPY public.other (id) FROM stdin;\n\\.\n\
--\n-- Name: items_idx; Type: INDEX; Schema: public; Owner: u\n--\n\nCREATE INDEX items_idx ON public.items USING btree (id);\n\
--\n-- Name: items_id_other; Type: INDEX; Schema: public; Owner: u\n--\n\nCREATE INDEX items_id_other ON public.items_x USING btree (id);\n\
--\n-- Name: items fk; Type: FK CONSTRAINT; Schema: public; Owner: u\n--\n\nALTER TABLE ONLY public.items ADD CONSTRAINT fk FOREIGN KEY (id) REFERENCES public.other(id);\n\
--\n-- PostgreSQL database dump complete\n--\n";

    fn feed<S: LineSink>(sink: S, chunk: usize) -> S {
        feed_in_chunks(sink, DUMP, chunk)
    }

    #[test]
    fn counts_copy_rows_per_table_whatever_the_chunking() {
        for chunk in [1, 7, 4096] {
            let c = feed(CopyCounter::default(), chunk);
            let want: Counts = [("public.items".into(), 3), ("public.other".into(), 0)].into();
            assert_eq!(c.into_counts(), want, "chunk {chunk}");
        }
    }

    #[test]
    fn selection_keeps_the_table_its_sequence_and_index_only() {
        let p = feed(Planner::default(), 13);
        let tables = [("public".to_string(), "items".to_string())].into();
        let (keep, notes) = select_entries(&p.entries, &tables, true);
        let mut out = Vec::new();
        let mut w = LineWriter::new(EntryFilter {
            scan: PgScanner::default(),
            keep,
            out: &mut out,
        });
        w.write_all(DUMP.as_bytes()).unwrap();
        w.finish().unwrap();
        let out = String::from_utf8(out).unwrap();
        for want in [
            "SET x = 1;",
            "CREATE TABLE public.items",
            "CREATE SEQUENCE public.items_id_seq",
            "OWNED BY public.items.id",
            "COPY public.items",
            "CREATE INDEX items_idx",
            "dump complete",
        ] {
            assert!(out.contains(want), "{want} missing from:\n{out}");
        }
        for unwanted in ["public.other", "items_id_other", "ADD CONSTRAINT fk"] {
            assert!(!out.contains(unwanted), "{unwanted} kept in:\n{out}");
        }
        assert_eq!(notes.len(), 1, "{notes:?}");
    }

    #[test]
    fn headers_and_identifiers_parse() {
        let e = parse_header(b"-- Name: a; b; Type: TABLE DATA; Schema: s; Owner: o\n").unwrap();
        assert_eq!((e.name.as_str(), e.kind.as_str()), ("a; b", "TABLE DATA"));
        assert!(parse_header(b"-- Name: x").is_none());
        assert_eq!(pg_ident("items_2"), "items_2");
        assert_eq!(pg_ident("Mixed"), "\"Mixed\"");
    }
}
