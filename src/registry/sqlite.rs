//! The embedded registry store: one SQLite file (default
//! `.bakehouse/registry.db`), used when no DynamoDB table is configured.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{
    Artifact, Lookup, PackageVersion, RegistryError, RegistryStore, Status, Version, VersionPattern,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    sort_key TEXT NOT NULL,
    version TEXT NOT NULL,
    label TEXT NOT NULL,
    os TEXT NOT NULL,
    status TEXT NOT NULL,
    bake_key TEXT UNIQUE,
    parent TEXT,
    trigger_json TEXT,
    build_id TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, sort_key)
);
CREATE INDEX IF NOT EXISTS versions_by_label ON versions (label, sort_key);
CREATE TABLE IF NOT EXISTS artifacts (
    package TEXT NOT NULL,
    sort_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    region TEXT,
    image_id TEXT NOT NULL,
    account TEXT,
    path TEXT,
    PRIMARY KEY (package, sort_key, name)
);
";

/// Registry records in an SQLite database file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, and its directory.
    pub fn open(path: &Path) -> Result<SqliteStore, RegistryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                RegistryError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
            })?;
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<SqliteStore, RegistryError> {
        Self::init(Connection::open_in_memory()?)
    }

    /// Sets up a connection: a 10 s busy timeout, WAL, the schema. Switching
    /// a fresh file to WAL can answer "database is locked" at once, without
    /// the busy handler, while another process does the same; that set-up
    /// is retried (every statement of it is idempotent) until the timeout.
    fn init(conn: Connection) -> Result<SqliteStore, RegistryError> {
        let timeout = std::time::Duration::from_secs(10);
        conn.busy_timeout(timeout)?;
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            let setup = conn
                .execute_batch("PRAGMA journal_mode=WAL;")
                .and_then(|()| conn.execute_batch(SCHEMA));
            match setup {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if matches!(
                        e.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && started.elapsed() < timeout =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                other => break other?,
            }
        }
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The connection, for other embedded records (builds) kept in the same file.
    pub fn connection(&self) -> Arc<Mutex<Connection>> {
        self.conn.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent
        // (transactions roll back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn corrupt(key: &str, message: impl std::fmt::Display) -> RegistryError {
    RegistryError::Corrupt {
        key: key.to_string(),
        message: message.to_string(),
    }
}

const VERSION_COLUMNS: &str =
    "name, version, label, os, status, bake_key, parent, trigger_json, build_id, created_at, sort_key";

fn read_version(conn: &Connection, row: &Row<'_>) -> Result<PackageVersion, RegistryError> {
    let name: String = row.get(0)?;
    let version: String = row.get(1)?;
    let key = format!("{name}@{version}");
    let trigger: Option<String> = row.get(7)?;
    let created: String = row.get(9)?;
    let sort_key: String = row.get(10)?;
    let os: String = row.get(3)?;
    let status: String = row.get(4)?;
    Ok(PackageVersion {
        version: version.parse().map_err(|e| corrupt(&key, e))?,
        label: row.get(2)?,
        package_type: "image".into(),
        os: os.parse().map_err(|e| corrupt(&key, e))?,
        status: status.parse().map_err(|e| corrupt(&key, e))?,
        bake_key: row.get(5)?,
        parent: row.get(6)?,
        trigger: trigger
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| corrupt(&key, e))?,
        build_id: row.get(8)?,
        created_at: DateTime::parse_from_rfc3339(&created)
            .map_err(|e| corrupt(&key, e))?
            .with_timezone(&Utc),
        artifacts: read_artifacts(conn, &name, &sort_key)?,
        name,
    })
}

fn read_artifacts(
    conn: &Connection,
    package: &str,
    sort_key: &str,
) -> Result<Vec<Artifact>, RegistryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, provider, region, image_id, account, path FROM artifacts
         WHERE package = ?1 AND sort_key = ?2 ORDER BY position",
    )?;
    let rows = stmt.query_map(params![package, sort_key], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, provider, region, image_id, account, path) = row?;
        out.push(Artifact {
            provider: provider.parse().map_err(|e| corrupt(package, e))?,
            name,
            region,
            image_id,
            account,
            path,
        });
    }
    Ok(out)
}

fn insert_artifacts(
    conn: &Connection,
    package: &str,
    sort_key: &str,
    first_position: i64,
    artifacts: &[Artifact],
) -> Result<(), RegistryError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO artifacts (package, sort_key, position, name, provider, region, image_id, account, path)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (i, a) in artifacts.iter().enumerate() {
        let position = first_position + i64::try_from(i).unwrap_or(i64::MAX);
        stmt.execute(params![
            package,
            sort_key,
            position,
            a.name,
            a.provider.to_string(),
            a.region,
            a.image_id,
            a.account,
            a.path
        ])
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                RegistryError::DuplicateArtifactName {
                    package: package.to_string(),
                    version: Version::from_sort_key(sort_key)
                        .map(|v| v.to_string())
                        .unwrap_or_else(|_| sort_key.to_string()),
                    name: a.name.clone(),
                }
            }
            other => other.into(),
        })?;
    }
    Ok(())
}

fn latest(conn: &Connection, name: &str) -> Result<Option<Version>, RegistryError> {
    let key: Option<String> = conn
        .query_row(
            "SELECT sort_key FROM versions WHERE name = ?1 ORDER BY sort_key DESC LIMIT 1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    key.map(|k| Version::from_sort_key(&k)).transpose()
}

fn get(
    conn: &Connection,
    name: &str,
    version: &Version,
) -> Result<Option<PackageVersion>, RegistryError> {
    let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE name = ?1 AND sort_key = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![name, version.sort_key()])?;
    match rows.next()? {
        Some(row) => Ok(Some(read_version(conn, row)?)),
        None => Ok(None),
    }
}

#[async_trait]
impl RegistryStore for SqliteStore {
    async fn latest_version(&self, name: &str) -> Result<Option<Version>, RegistryError> {
        latest(&self.lock(), name)
    }

    async fn insert(
        &self,
        package: &PackageVersion,
        seen_latest: Option<&Version>,
    ) -> Result<(), RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if latest(&tx, &package.name)?.as_ref() != seen_latest {
            return Err(RegistryError::Conflict(package.name.clone()));
        }
        let sort_key = package.version.sort_key();
        if get(&tx, &package.name, &package.version)?.is_some() {
            return Err(RegistryError::VersionExists {
                name: package.name.clone(),
                version: package.version.to_string(),
            });
        }
        if let Some(key) = &package.bake_key {
            let owner: Option<(String, String)> = tx
                .query_row(
                    "SELECT name, version FROM versions WHERE bake_key = ?1",
                    params![key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((name, version)) = owner {
                return Err(RegistryError::BakeKeyExists {
                    key: key.clone(),
                    name,
                    version,
                });
            }
        }
        let trigger = package
            .trigger
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| corrupt(&package.name, e))?;
        tx.execute(
            "INSERT INTO versions (name, sort_key, version, label, os, status, bake_key, parent, trigger_json, build_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                package.name,
                sort_key,
                package.version.to_string(),
                package.label,
                package.os.to_string(),
                package.status.to_string(),
                package.bake_key,
                package.parent,
                trigger,
                package.build_id,
                package.created_at.to_rfc3339(),
            ],
        )?;
        insert_artifacts(&tx, &package.name, &sort_key, 0, &package.artifacts)?;
        tx.commit()?;
        Ok(())
    }

    async fn append_artifacts(
        &self,
        name: &str,
        version: &Version,
        artifacts: &[Artifact],
    ) -> Result<PackageVersion, RegistryError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sort_key = version.sort_key();
        let count: i64 = tx.query_row(
            "SELECT COUNT(*) FROM artifacts WHERE package = ?1 AND sort_key = ?2",
            params![name, sort_key],
            |r| r.get(0),
        )?;
        if get(&tx, name, version)?.is_none() {
            return Err(RegistryError::NotFound {
                what: "package version",
                query: format!("{name} {version}"),
            });
        }
        insert_artifacts(&tx, name, &sort_key, count, artifacts)?;
        let stored = get(&tx, name, version)?;
        tx.commit()?;
        stored.ok_or_else(|| corrupt(name, "version vanished"))
    }

    async fn get(
        &self,
        name: &str,
        version: &Version,
    ) -> Result<Option<PackageVersion>, RegistryError> {
        get(&self.lock(), name, version)
    }

    async fn resolve(
        &self,
        lookup: &Lookup,
        pattern: &VersionPattern,
        include_inactive: bool,
    ) -> Result<Option<PackageVersion>, RegistryError> {
        let conn = self.lock();
        let (column, value) = match lookup {
            Lookup::Name(n) => ("name", n),
            Lookup::Label(l) => ("label", l),
        };
        let prefix = pattern.sort_key_prefix();
        let (op, bound) = match pattern {
            VersionPattern::Exact(_) => ("=", prefix),
            _ => ("LIKE", format!("{}%", prefix.replace('%', ""))),
        };
        let status = if include_inactive {
            "AND status != 'deleted'"
        } else {
            "AND status = 'active'"
        };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE {column} = ?1 AND sort_key {op} ?2 {status}
             ORDER BY sort_key DESC, name DESC LIMIT 1"
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(params![value, bound])?;
        match rows.next()? {
            Some(row) => Ok(Some(read_version(&conn, row)?)),
            None => Ok(None),
        }
    }

    async fn list(&self, name: Option<&str>) -> Result<Vec<PackageVersion>, RegistryError> {
        let conn = self.lock();
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE ?1 IS NULL OR name = ?1
             ORDER BY name, sort_key DESC"
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(params![name])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(read_version(&conn, row)?);
        }
        Ok(out)
    }

    async fn find_by_bake_key(&self, key: &str) -> Result<Option<PackageVersion>, RegistryError> {
        let conn = self.lock();
        let sql = format!("SELECT {VERSION_COLUMNS} FROM versions WHERE bake_key = ?1");
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(params![key])?;
        match rows.next()? {
            Some(row) => Ok(Some(read_version(&conn, row)?)),
            None => Ok(None),
        }
    }

    async fn set_status(
        &self,
        name: &str,
        version: &Version,
        status: Status,
    ) -> Result<PackageVersion, RegistryError> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE versions SET status = ?3 WHERE name = ?1 AND sort_key = ?2",
            params![name, version.sort_key(), status.to_string()],
        )?;
        if n == 0 {
            return Err(RegistryError::NotFound {
                what: "package version",
                query: format!("{name} {version}"),
            });
        }
        get(&conn, name, version)?.ok_or_else(|| corrupt(name, "version vanished"))
    }
}
