//! Build records in the embedded SQLite file (beside the registry).

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{BuildRecord, BuildStore, BuildStoreError, RecipeBundle};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recipes (
    name TEXT PRIMARY KEY,
    bundle TEXT NOT NULL
);
";

/// Build records in SQLite (shares the registry's connection).
#[derive(Clone)]
pub struct SqliteBuildStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteBuildStore {
    /// Uses `conn` (e.g. [`crate::registry::SqliteStore::connection`]),
    /// creating the tables if needed.
    pub fn new(conn: Arc<Mutex<Connection>>) -> Result<SqliteBuildStore, BuildStoreError> {
        conn.lock()
            .unwrap_or_else(|p| p.into_inner())
            .execute_batch(SCHEMA)?;
        Ok(SqliteBuildStore { conn })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn decode(id: &str, text: &str) -> Result<BuildRecord, BuildStoreError> {
    serde_json::from_str(text).map_err(|e| BuildStoreError::Corrupt {
        id: id.to_string(),
        message: e.to_string(),
    })
}

fn encode(record: &BuildRecord) -> Result<String, BuildStoreError> {
    serde_json::to_string(record).map_err(|e| BuildStoreError::Corrupt {
        id: record.id.clone(),
        message: e.to_string(),
    })
}

#[async_trait]
impl BuildStore for SqliteBuildStore {
    async fn create(&self, record: &BuildRecord) -> Result<bool, BuildStoreError> {
        let n = self.lock().execute(
            "INSERT OR IGNORE INTO builds (id, revision, created_at, record) VALUES (?1, ?2, ?3, ?4)",
            params![record.id, record.revision as i64, record.created_at.to_rfc3339(), encode(record)?],
        )?;
        Ok(n == 1)
    }

    async fn get(&self, id: &str) -> Result<Option<BuildRecord>, BuildStoreError> {
        let text: Option<String> = self
            .lock()
            .query_row(
                "SELECT record FROM builds WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| decode(id, &t)).transpose()
    }

    async fn save(&self, record: &mut BuildRecord) -> Result<(), BuildStoreError> {
        let seen = record.revision;
        record.revision += 1;
        let n = self.lock().execute(
            "UPDATE builds SET revision = ?2, record = ?3 WHERE id = ?1 AND revision = ?4",
            params![
                record.id,
                record.revision as i64,
                encode(record)?,
                seen as i64
            ],
        )?;
        if n == 0 {
            record.revision = seen;
            return Err(BuildStoreError::Conflict(record.id.clone()));
        }
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<BuildRecord>, BuildStoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT id, record FROM builds ORDER BY created_at DESC LIMIT ?1")?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text) = row?;
            out.push(decode(&id, &text)?);
        }
        Ok(out)
    }

    async fn put_recipe(&self, name: &str, bundle: &RecipeBundle) -> Result<(), BuildStoreError> {
        let text = serde_json::to_string(bundle).map_err(|e| BuildStoreError::Corrupt {
            id: name.to_string(),
            message: e.to_string(),
        })?;
        self.lock().execute(
            "INSERT INTO recipes (name, bundle) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET bundle = excluded.bundle",
            params![name, text],
        )?;
        Ok(())
    }

    async fn get_recipe(&self, name: &str) -> Result<Option<RecipeBundle>, BuildStoreError> {
        let text: Option<String> = self
            .lock()
            .query_row(
                "SELECT bundle FROM recipes WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| BuildStoreError::Corrupt {
                id: name.to_string(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    async fn delete_recipe(&self, name: &str) -> Result<(), BuildStoreError> {
        self.lock()
            .execute("DELETE FROM recipes WHERE name = ?1", params![name])?;
        Ok(())
    }
}
