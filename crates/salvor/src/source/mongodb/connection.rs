//! The connection: a driver client built from the secret uri, errors that
//! name only the hosts, and the listings and counts both methods plan with.

use std::time::Duration;

use mongodb::bson::{Document, RawDocumentBuf, doc};
use mongodb::options::ClientOptions;
use mongodb::sync::{Client, Collection};
use salvor_engine::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use super::MongodbConfig;

/// Databases never dumped when `databases` is empty.
const INTERNAL_DATABASES: [&str; 3] = ["admin", "config", "local"];

/// A connected client and the hosts it talks to (for messages).
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) hosts: String,
}

/// One line of a driver error, at most 300 characters.
pub(super) fn one_line(e: &mongodb::error::Error) -> String {
    let s: String = e
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if s.chars().count() > 300 {
        format!("{}...", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

impl Conn {
    pub(super) fn open(cfg: &MongodbConfig) -> Result<Self> {
        let uri = cfg.uri.resolve()?;
        let mut opts = ClientOptions::parse(uri.as_str()).run().map_err(|_| {
            Error::invalid("the mongodb uri of this source is not a valid connection string")
                .hint("write it as mongodb://[user:password@]host[:port][/?options]")
        })?;
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        opts.server_selection_timeout = Some(timeout);
        opts.connect_timeout = Some(timeout);
        opts.app_name = Some("salvor".into());
        let hosts = opts
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let client = Client::with_options(opts).map_err(|e| {
            Error::invalid(format!(
                "cannot set up a mongodb client for {hosts}: {}",
                one_line(&e)
            ))
        })?;
        Ok(Self { client, hosts })
    }

    /// Wraps a driver error: what failed, where, why.
    pub(super) fn err(&self, what: &str, e: &mongodb::error::Error) -> Error {
        if matches!(*e.kind, mongodb::error::ErrorKind::Authentication { .. }) {
            return Error::new(
                ErrorKind::Io,
                format!(
                    "mongodb at {} refused the user and password of the source's uri",
                    self.hosts
                ),
            )
            .hint("check the credentials (and authSource) in the source's uri");
        }
        Error::new(
            ErrorKind::Io,
            format!(
                "{what} on mongodb at {} failed: {}",
                self.hosts,
                one_line(e)
            ),
        )
        .hint("check that the server is up and the source's uri and credentials are right")
    }

    pub(super) fn server_version(&self) -> Option<String> {
        let info = self
            .client
            .database("admin")
            .run_command(doc! { "buildInfo": 1 })
            .run()
            .ok()?;
        info.get_str("version").ok().map(str::to_string)
    }

    pub(super) fn is_replica_set(&self) -> Result<bool> {
        let hello = self
            .client
            .database("admin")
            .run_command(doc! { "hello": 1 })
            .run()
            .map_err(|e| self.err("hello", &e))?;
        Ok(hello.contains_key("setName"))
    }

    /// The configured databases, or every user database.
    pub(super) fn databases(&self, cfg: &MongodbConfig) -> Result<Vec<String>> {
        if !cfg.databases.is_empty() {
            return Ok(cfg.databases.clone());
        }
        let mut names = self
            .client
            .list_database_names()
            .run()
            .map_err(|e| self.err("listing databases", &e))?;
        names.retain(|n| !INTERNAL_DATABASES.contains(&n.as_str()));
        names.sort();
        Ok(names)
    }

    /// A database's collections (not views, not `system.*`), sorted.
    ///
    /// Runs `listCollections` as a raw cursor command: typed collection
    /// specifications would also parse fields salvor does not need (the
    /// nx-27017 stand-in sends `info.uuid` as a string, for one).
    pub(super) fn collections(&self, db: &str) -> Result<Vec<String>> {
        let what = format!("listing collections of {db}");
        let specs = self
            .client
            .database(db)
            .run_cursor_command(doc! { "listCollections": 1, "authorizedCollections": true })
            .run()
            .map_err(|e| self.err(&what, &e))?;
        let mut names = Vec::new();
        for spec in specs {
            let spec = spec.map_err(|e| self.err(&what, &e))?;
            let is_view = spec.get_str("type").is_ok_and(|t| t != "collection");
            match spec.get_str("name") {
                Ok(n) if !is_view && !n.starts_with("system.") => names.push(n.to_string()),
                _ => {}
            }
        }
        names.sort();
        Ok(names)
    }

    pub(super) fn collection(&self, db: &str, coll: &str) -> Collection<RawDocumentBuf> {
        self.client.database(db).collection(coll)
    }

    pub(super) fn count(&self, db: &str, coll: &str) -> Result<u64> {
        self.collection(db, coll)
            .count_documents(doc! {})
            .run()
            .map_err(|e| self.err(&format!("counting {db}.{coll}"), &e))
    }

    /// The `listIndexes` specs of a collection (empty if it does not exist).
    pub(super) fn indexes(&self, db: &str, coll: &str) -> Result<Vec<Document>> {
        let what = format!("listing indexes of {db}.{coll}");
        let cursor = self
            .client
            .database(db)
            .collection::<Document>(coll)
            .list_indexes()
            .run();
        let cursor = match cursor {
            Ok(c) => c,
            Err(e) if is_namespace_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(&what, &e)),
        };
        let mut out = Vec::new();
        for model in cursor {
            let model = model.map_err(|e| self.err(&what, &e))?;
            let spec = mongodb::bson::to_document(&model).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("{what}: cannot encode an index: {e}"),
                )
            })?;
            out.push(spec);
        }
        Ok(out)
    }

    /// Live counts in the manifest's shape.
    pub(super) fn counts(&self, cfg: &MongodbConfig) -> Result<serde_json::Map<String, Value>> {
        let mut dbs = serde_json::Map::new();
        for db in self.databases(cfg)? {
            let mut colls = serde_json::Map::new();
            for coll in self.collections(&db)? {
                let documents = self.count(&db, &coll)?;
                let indexes = self.indexes(&db, &coll)?.len();
                colls.insert(coll, json!({ "documents": documents, "indexes": indexes }));
            }
            dbs.insert(db, Value::Object(colls));
        }
        Ok(dbs)
    }
}

fn is_namespace_not_found(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 26)
}
