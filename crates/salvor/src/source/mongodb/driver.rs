//! The driver method: collections dumped as raw BSON straight from the
//! cursor, and restored by parsing that stream back into `insertMany` batches.

use std::io::{self, Write};

use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::sync::{Collection, Cursor};
use salvor_engine::{Error, Result};
use serde_json::{Value, json};

use super::MongodbConfig;
use super::connection::{Conn, one_line};
use super::plan::{Item, check_targets, describe};
use crate::source::blocks::{BlockReader, BlockSource};
use crate::source::{RestoreContext, RestoreReport, Streams};

/// Bytes of documents per `insertMany` at most (the server's message limit is 48 MB).
const BATCH_BYTES: usize = 8 << 20;
/// Largest BSON document accepted from a stream (the server's limit is 16 MiB).
const MAX_DOCUMENT: usize = 48 << 20;

// ------------------------------------------------------------------ streams

/// Percent-encodes `/` and `%` so a collection name is one path component.
fn encode_name(coll: &str) -> String {
    coll.replace('%', "%25").replace('/', "%2F")
}

fn documents_stream(db: &str, coll: &str) -> String {
    format!("{db}/{}.bson", encode_name(coll))
}

fn indexes_stream(db: &str, coll: &str) -> String {
    format!("{db}/{}.indexes.json", encode_name(coll))
}

/// A cursor as concatenated BSON documents.
struct Documents {
    cursor: Cursor<RawDocumentBuf>,
    count: u64,
}

impl BlockSource for Documents {
    type Error = mongodb::error::Error;

    fn next_block(&mut self, block: &mut Vec<u8>) -> Result<bool, Self::Error> {
        match self.cursor.next() {
            None => Ok(false),
            Some(d) => {
                *block = d?.into_bytes();
                self.count += 1;
                Ok(true)
            }
        }
    }

    fn message(e: &Self::Error) -> String {
        one_line(e)
    }
}

/// Index specs as canonical extended JSON.
fn indexes_json(specs: &[Document]) -> Vec<u8> {
    let list: Vec<Value> = specs
        .iter()
        .map(|d| Bson::Document(d.clone()).into_canonical_extjson())
        .collect();
    serde_json::to_vec_pretty(&list).unwrap_or_default()
}

/// Dumps one collection's documents and indexes; returns their counts.
pub(super) fn dump_collection(
    conn: &Conn,
    streams: &mut Streams,
    db: &str,
    coll: &str,
) -> Result<Value> {
    let indexes = conn.indexes(db, coll)?;
    let cursor = conn
        .collection(db, coll)
        .find(doc! {})
        .run()
        .map_err(|e| conn.err(&format!("reading {db}.{coll}"), &e))?;
    let mut reader = BlockReader::new(Documents { cursor, count: 0 });
    let res = streams.add(&documents_stream(db, coll), &mut reader);
    if let Some(e) = reader.error.take() {
        return Err(conn.err(&format!("reading {db}.{coll}"), &e));
    }
    res?;
    streams.add(&indexes_stream(db, coll), &indexes_json(&indexes)[..])?;
    Ok(json!({ "documents": reader.source.count, "indexes": indexes.len() }))
}

// ------------------------------------------------------------------ restore (driver)

/// The first whole document of a stream of concatenated BSON and its length,
/// or `None` when `buf` holds only part of one. Every element is checked,
/// so a damaged document is an error here, not inside the driver.
///
/// # Errors
/// A length out of range or a malformed document.
pub fn next_document(buf: &[u8], name: &str) -> Result<Option<(RawDocumentBuf, usize)>> {
    let Some(len_bytes) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_le_bytes(len_bytes.try_into().expect("4 bytes"));
    let len = usize::try_from(len).unwrap_or(0);
    if !(5..=MAX_DOCUMENT).contains(&len) {
        return Err(Error::corrupt(format!(
            "the stream of {name} has a bad document length"
        )));
    }
    let Some(bytes) = buf.get(..len) else {
        return Ok(None);
    };
    let bad = |e: String| {
        Error::corrupt(format!(
            "the stream of {name} holds an invalid document: {e}"
        ))
    };
    let doc = RawDocumentBuf::from_bytes(bytes.to_vec()).map_err(|e| bad(e.to_string()))?;
    validate(&doc).map_err(bad)?;
    Ok(Some((doc, len)))
}

/// Walks every element, into nested documents and arrays, without recursion.
fn validate(doc: &mongodb::bson::RawDocument) -> std::result::Result<(), String> {
    use mongodb::bson::RawBsonRef;
    type Level<'a> = Box<dyn Iterator<Item = mongodb::bson::raw::Result<RawBsonRef<'a>>> + 'a>;
    let mut stack: Vec<Level<'_>> = vec![Box::new(doc.iter().map(|r| r.map(|(_, v)| v)))];
    while let Some(top) = stack.last_mut() {
        match top.next() {
            None => {
                stack.pop();
            }
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(RawBsonRef::Document(d))) => {
                stack.push(Box::new(d.iter().map(|r| r.map(|(_, v)| v))));
            }
            Some(Ok(RawBsonRef::Array(a))) => stack.push(Box::new(a.into_iter())),
            Some(Ok(_)) => {}
        }
    }
    Ok(())
}

/// Parses concatenated BSON written to it and inserts it in batches.
struct Inserter<'c> {
    conn: &'c Conn,
    coll: Collection<RawDocumentBuf>,
    name: String,
    buf: Vec<u8>,
    batch: Vec<RawDocumentBuf>,
    batch_bytes: usize,
    batch_size: usize,
    inserted: u64,
    error: Option<Error>,
}

impl Inserter<'_> {
    fn fail(&mut self, e: Error) -> io::Error {
        let msg = e.to_string();
        self.error = Some(e);
        io::Error::other(msg)
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.coll
            .insert_many(&batch)
            .run()
            .map_err(|e| self.conn.err(&format!("inserting into {}", self.name), &e))?;
        self.inserted += batch.len() as u64;
        Ok(())
    }

    /// Moves every complete document of `buf` into the batch.
    fn take_documents(&mut self) -> Result<()> {
        let mut start = 0;
        while let Some((doc, len)) = next_document(&self.buf[start..], &self.name)? {
            start += len;
            self.batch_bytes += len;
            self.batch.push(doc);
            if self.batch.len() >= self.batch_size || self.batch_bytes >= BATCH_BYTES {
                self.flush_batch()?;
            }
        }
        self.buf.drain(..start);
        Ok(())
    }

    fn finish(&mut self) -> Result<u64> {
        if !self.buf.is_empty() {
            return Err(Error::corrupt(format!(
                "the stream of {} ends inside a document",
                self.name
            )));
        }
        self.flush_batch()?;
        Ok(self.inserted)
    }
}

impl Write for Inserter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.take_documents().map_err(|e| self.fail(e))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a collection's index specs from the snapshot.
fn recorded_indexes(ctx: &RestoreContext, i: &Item) -> Result<Vec<Document>> {
    let mut raw = Vec::new();
    ctx.copy_stream(&indexes_stream(&i.db, &i.coll), &mut raw)?;
    let bad = |why: String| {
        Error::corrupt(format!(
            "the index list of {}.{} is unreadable: {why}",
            i.db, i.coll
        ))
    };
    let list: Vec<Value> = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
    list.into_iter()
        .map(|v| match Bson::try_from(v) {
            Ok(Bson::Document(d)) => Ok(d),
            Ok(_) => Err(bad("an entry is not a document".into())),
            Err(e) => Err(bad(e.to_string())),
        })
        .collect()
}

/// Creates the recorded secondary indexes (`_id_` exists anyway); returns how many.
fn create_indexes(conn: &Conn, i: &Item, specs: Vec<Document>) -> Result<usize> {
    let specs: Vec<Document> = specs
        .into_iter()
        .filter(|s| s.get_str("name").ok() != Some("_id_"))
        .map(|mut s| {
            s.remove("ns");
            s
        })
        .collect();
    if specs.is_empty() {
        return Ok(0);
    }
    let n = specs.len();
    conn.client
        .database(&i.into)
        .run_command(doc! { "createIndexes": &i.coll, "indexes": specs })
        .run()
        .map_err(|e| conn.err(&format!("creating indexes on {}.{}", i.into, i.coll), &e))?;
    Ok(n)
}

/// Loads one collection: drop if it held documents (confirmed), insert, index.
fn restore_collection(
    cfg: &MongodbConfig,
    conn: &Conn,
    ctx: &RestoreContext,
    i: &Item,
    existing: u64,
) -> Result<(u64, usize)> {
    let target = conn.collection(&i.into, &i.coll);
    let name = format!("{}.{}", i.into, i.coll);
    if existing > 0 {
        target
            .drop()
            .run()
            .map_err(|e| conn.err(&format!("dropping {name}"), &e))?;
    }
    let specs = recorded_indexes(ctx, i)?;
    let mut ins = Inserter {
        conn,
        coll: target,
        name,
        buf: Vec::new(),
        batch: Vec::new(),
        batch_bytes: 0,
        batch_size: cfg.batch_size.max(1),
        inserted: 0,
        error: None,
    };
    let res = ctx.copy_stream(&documents_stream(&i.db, &i.coll), &mut ins);
    if let Some(e) = ins.error.take() {
        return Err(e);
    }
    res?;
    let inserted = ins.finish()?;
    let indexes = create_indexes(conn, i, specs)?;
    Ok((inserted, indexes))
}

pub(super) fn restore_driver(
    cfg: &MongodbConfig,
    ctx: &RestoreContext,
    items: &[Item],
) -> Result<RestoreReport> {
    let conn = Conn::open(cfg)?;
    let existing = check_targets(&conn, ctx, items)?;
    let mut report = RestoreReport::default();
    for (i, &n) in items.iter().zip(&existing) {
        if ctx.dry_run {
            report
                .actions
                .push(format!("would restore {}", describe(i, n)));
            report
                .counts
                .insert(format!("{}.{}", i.into, i.coll), i.documents.into());
            continue;
        }
        let (inserted, indexes) = restore_collection(cfg, &conn, ctx, i, n)?;
        report.actions.push(format!(
            "restored {}.{} into {}.{}: {inserted} documents, {indexes} secondary indexes",
            i.db, i.coll, i.into, i.coll
        ));
        report
            .counts
            .insert(format!("{}.{}", i.into, i.coll), inserted.into());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert_eq!(documents_stream("app", "a/b%c"), "app/a%2Fb%25c.bson");
        assert_eq!(indexes_stream("app", "x"), "app/x.indexes.json");
    }
}
