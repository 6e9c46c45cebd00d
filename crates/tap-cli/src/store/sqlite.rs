//! The embedded local store: one SQLite file (`$TAP_HOME/tap.db`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use tap_core::runs::{MetricPoint, Run};

use super::tiles;
use super::{
    LogLine, LogStore, MAX_UPDATE_ATTEMPTS, Param, ParamStore, Result, RunStore, Runs, Skipped, StoreError, Stream,
    after_lost_write,
};

/// SQLite blocks (and waits up to `busy_timeout` for another writer), so every statement
/// runs on the blocking pool (crate::blocking), never on an async worker.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Whether the chart tiles hold every point (a read-only store of an earlier release: no).
    tiled: bool,
    /// Where it is, for messages.
    path: Arc<std::path::PathBuf>,
}

/// A failure of the local store: what it was doing, and SQLite's (or the file system's) error.
fn local(what: impl std::fmt::Display, e: impl Into<tap_store::BoxError>) -> StoreError {
    StoreError::backend(format!("local store: {what}"), e)
}

/// The store's version (SQLite's user_version); one of a newer tap is refused in one line.
fn store_version(conn: &Connection, path: &Path) -> Result<u32> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| local(path.display(), e))?;
    if found > STORE_VERSION {
        return Err(StoreError::message(format!(
            "local store {}: version {found}, written by a newer tap (this one knows up to {STORE_VERSION}); upgrade tap",
            path.display()
        )));
    }
    Ok(found)
}

fn read_only_message(path: &Path) -> String {
    format!(
        "the local store {} is read-only: tap reads it, but cannot record anything there (copy it, or set TAP_HOME to a writable directory)",
        path.display()
    )
}

/// Whether this process cannot write `path` or its directory (permissions, or a read-only
/// file system: root passes permission checks, not EROFS).
fn cannot_write(path: &Path) -> bool {
    !writable(path) || !dir_writable(path)
}

/// Whether this process may write `path` (permissions and the file system).
fn writable(path: &Path) -> bool {
    !read_only_fs(path) && nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Whether SQLite could make files beside `path` (its WAL shared-memory file).
fn dir_writable(path: &Path) -> bool {
    path.parent().is_some_and(writable)
}

fn read_only_fs(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path).is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// `path` for an SQLite URI: `%`, `?` and `#` escaped.
fn uri_path(path: &Path) -> String {
    path.to_string_lossy().replace('%', "%25").replace('?', "%3f").replace('#', "%23")
}

/// How long a statement waits for another connection's lock (SQLite's busy timeout).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Schema attempts while another connection holds the new database (100 × 50 ms = 5 s, as
/// [`BUSY_TIMEOUT`]).
const OPEN_BUSY_RETRIES: u32 = 100;
const OPEN_BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The local store's version (`PRAGMA user_version`): 2 since runs have attempts (run bodies
/// of [`tap_core::runs::RUN_FORMAT`] 2), 3 since every metric point is also in its chart tiles
/// (`tiles`; an earlier tap appending points would leave them out, so it is refused). 0: a
/// store of an earlier release, read as it is.
pub const STORE_VERSION: u32 = 3;
/// The first version whose chart tiles hold every point.
const TILED_VERSION: u32 = 3;

/// Run after [`BUSY_TIMEOUT`] is set; retried while another connection creates the database
/// (see `open`).
const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS runs (
    experiment_id TEXT NOT NULL, run_id TEXT NOT NULL, version INTEGER NOT NULL,
    started_ms INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (experiment_id, run_id));
CREATE TABLE IF NOT EXISTS metrics (
    experiment_id TEXT NOT NULL, run_id TEXT NOT NULL, step INTEGER NOT NULL,
    name TEXT NOT NULL, value REAL NOT NULL, ts_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics (experiment_id, run_id, step);
CREATE INDEX IF NOT EXISTS metrics_series ON metrics (experiment_id, run_id, name, step, value);
CREATE TABLE IF NOT EXISTS logs (
    experiment_id TEXT NOT NULL, run_id TEXT NOT NULL, seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL, stream TEXT NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY (experiment_id, run_id, seq));
CREATE TABLE IF NOT EXISTS params (
    name TEXT NOT NULL, version INTEGER NOT NULL, value TEXT NOT NULL, modified_ms INTEGER NOT NULL,
    PRIMARY KEY (name, version));
";

impl SqliteStore {
    /// Opens (creating) the store at `path`; a store tap cannot write (a mounted snapshot, a
    /// colleague's directory, a read-only file system) is opened read-only: every read works,
    /// and a write says in one line that the store is read-only.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        match Self::open_rw(path) {
            Err(e) if path.is_file() && cannot_write(path) => {
                Self::open_ro(path).map_err(|ro| StoreError::message(format!("{e} (read-only: {ro})")))
            }
            other => other,
        }
    }

    /// Read-only: `mode=ro` where SQLite can still make its shared-memory file beside the
    /// database (a WAL database needs one), else `immutable=1` (the directory cannot change,
    /// so neither can the file).
    fn open_ro(path: &Path) -> Result<SqliteStore> {
        use rusqlite::OpenFlags;
        let mode = if dir_writable(path) { "mode=ro" } else { "immutable=1" };
        let uri = format!("file:{}?{mode}", uri_path(path));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(uri, flags).map_err(|e| local(path.display(), e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| local(path.display(), e))?;
        let tiled = store_version(&conn, path)? >= TILED_VERSION;
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)), tiled, path: Arc::new(path.to_owned()) })
    }

    /// Why nothing can be recorded here (None: the store is writable).
    pub fn read_only(&self) -> Option<String> {
        let conn = self.conn.lock().ok()?;
        conn.is_readonly(rusqlite::MAIN_DB).ok().filter(|ro| *ro).map(|_| read_only_message(&self.path))
    }

    fn open_rw(path: &Path) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| local(dir.display(), e))?;
        }
        let conn = Connection::open(path).map_err(|e| local(path.display(), e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| local(path.display(), e))?;
        // Two taps creating a new database at once: switching it to WAL returns "database is
        // locked" at once, without the busy timeout's wait (SQLite does not wait there). So
        // the schema is retried, bounded (regression: CI's `tap runs list` during `tap run`).
        let mut attempt = 0;
        loop {
            match conn.execute_batch(SCHEMA).and_then(|()| conn.execute_batch(tiles::SCHEMA)) {
                Ok(()) => break,
                Err(e)
                    if attempt < OPEN_BUSY_RETRIES
                        && matches!(
                            e.sqlite_error_code(),
                            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                        ) =>
                {
                    attempt += 1;
                    std::thread::sleep(OPEN_BUSY_PAUSE);
                }
                Err(e) => return Err(local(path.display(), e)),
            }
        }
        // The store's version (SQLite's user_version): 0 for a store of a release before
        // versions, which this one reads as it is (run bodies carry their own format).
        let found = store_version(&conn, path)?;
        if found < STORE_VERSION {
            // A store of an earlier release: its points' tiles, once, with the new version in
            // the same transaction (two taps opening it at once: the second finds it done).
            let upgrade = |conn: &mut Connection| -> rusqlite::Result<()> {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let now: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                if now < TILED_VERSION {
                    tiles::backfill(&tx)?;
                }
                if now < STORE_VERSION {
                    tx.execute_batch(&format!("PRAGMA user_version = {STORE_VERSION}"))?;
                }
                tx.commit()
            };
            let mut conn = conn;
            upgrade(&mut conn).map_err(|e| local(path.display(), e))?;
            return Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)), tiled: true, path: Arc::new(path.to_owned()) });
        }
        Ok(SqliteStore { conn: Arc::new(Mutex::new(conn)), tiled: true, path: Arc::new(path.to_owned()) })
    }

    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (conn, path) = (self.conn.clone(), self.path.clone());
        crate::blocking::run(move |_| {
            let mut conn = conn.lock().map_err(|_| StoreError::message("local store: lock poisoned"))?;
            f(&mut conn).map_err(|e| {
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) {
                    StoreError::message(read_only_message(&path))
                } else {
                    StoreError::backend("local store", e)
                }
            })
        })
        .await
    }

    fn read_run(conn: &Connection, exp: &str, id: &str) -> rusqlite::Result<Option<(Run, i64)>> {
        conn.query_row(
            "SELECT body, version FROM runs WHERE experiment_id = ?1 AND run_id = ?2",
            params![exp, id],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()?
        .map(|(body, v)| Ok((decode(&body)?, v)))
        .transpose()
    }
}

fn decode(body: &str) -> rusqlite::Result<Run> {
    tap_core::runs::decode_run(body)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

fn encode(run: &Run) -> rusqlite::Result<String> {
    serde_json::to_string(run).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

impl RunStore for SqliteStore {
    async fn create_run(&self, run: &Run) -> Result<Run> {
        let r = run.clone();
        let existing = self
            .with(move |c| {
                let inserted = c.execute(
                    "INSERT OR IGNORE INTO runs (experiment_id, run_id, version, started_ms, body) VALUES (?1, ?2, 1, ?3, ?4)",
                    params![r.experiment_id, r.run_id, r.started_ms, encode(&r)?],
                )?;
                if inserted == 1 { Ok(None) } else { Self::read_run(c, &r.experiment_id, &r.run_id) }
            })
            .await?;
        match existing {
            None => Ok(run.clone()),
            Some((stored, _)) if stored == *run => Ok(stored),
            Some(_) => {
                Err(StoreError::Conflict(format!("run {}/{} exists with other content", run.experiment_id, run.run_id)))
            }
        }
    }

    async fn delete_run(&self, experiment: &str, run_id: &str) -> Result<bool> {
        self.delete_where("DELETE FROM metrics WHERE experiment_id = ?1 AND run_id = ?2", experiment, run_id).await?;
        self.delete_where("DELETE FROM metric_tiles WHERE experiment_id = ?1 AND run_id = ?2", experiment, run_id)
            .await?;
        let n =
            self.delete_where("DELETE FROM runs WHERE experiment_id = ?1 AND run_id = ?2", experiment, run_id).await?;
        Ok(n > 0)
    }

    async fn get_run(&self, experiment: &str, run_id: &str) -> Result<Option<Run>> {
        let (e, id) = (experiment.to_owned(), run_id.to_owned());
        Ok(self.with(move |c| Self::read_run(c, &e, &id)).await?.map(|(r, _)| r))
    }

    async fn update_run<F>(&self, experiment: &str, run_id: &str, f: F) -> Result<Run>
    where
        F: Fn(&mut Run) + Send + Sync,
    {
        for attempt in 0..MAX_UPDATE_ATTEMPTS {
            let (e, id) = (experiment.to_owned(), run_id.to_owned());
            let Some((mut run, version)) = self.with(move |c| Self::read_run(c, &e, &id)).await? else {
                return Err(StoreError::NotFound(format!("run {experiment}/{run_id}")));
            };
            f(&mut run);
            let body = encode(&run).map_err(|e| StoreError::backend("local store", e))?;
            let (e, id) = (experiment.to_owned(), run_id.to_owned());
            let written = self
                .with(move |c| {
                    c.execute(
                        "UPDATE runs SET body = ?1, version = version + 1 WHERE experiment_id = ?2 AND run_id = ?3 AND version = ?4",
                        params![body, e, id, version],
                    )
                })
                .await?;
            if written == 1 {
                return Ok(run);
            }
            after_lost_write(attempt).await;
        }
        Err(StoreError::Conflict(format!(
            "run {experiment}/{run_id}: {MAX_UPDATE_ATTEMPTS} concurrent updates in a row"
        )))
    }

    async fn list_runs(&self, experiment: Option<&str>) -> Result<Runs> {
        let experiment = experiment.map(str::to_owned);
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT run_id, body FROM runs WHERE (?1 IS NULL OR experiment_id = ?1) \
                 ORDER BY started_ms DESC, run_id DESC",
            )?;
            let rows = stmt.query_map(params![experiment], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1))))?;
            let mut listing = Runs::default();
            for row in rows {
                let (id, body) = row?;
                match body.and_then(|b| decode(&b)) {
                    Ok(run) => listing.runs.push(run),
                    Err(e) => listing.skipped.push(Skipped { id, why: tap_core::text::chain(&e).to_string() }),
                }
            }
            Ok(listing)
        })
        .await
    }

    async fn append_metrics(&self, experiment: &str, run_id: &str, points: &[MetricPoint]) -> Result<()> {
        let (experiment, run_id, points) = (experiment.to_owned(), run_id.to_owned(), points.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO metrics (experiment_id, run_id, step, name, value, ts_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for p in &points {
                    stmt.execute(params![experiment, run_id, p.step as i64, p.name, p.value, p.ts_ms])?;
                }
            }
            let touched = tiles::fold(points.iter().map(|p| (p.name.as_str(), p.step, p.value)));
            tiles::store(&tx, &experiment, &run_id, &touched)?;
            tx.commit()
        })
        .await
    }

    async fn metrics(&self, experiment: &str, run_id: &str) -> Result<Vec<MetricPoint>> {
        let (experiment, run_id) = (experiment.to_owned(), run_id.to_owned());
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT step, name, value, ts_ms FROM metrics WHERE experiment_id = ?1 AND run_id = ?2 ORDER BY step, rowid",
            )?;
            let rows = stmt.query_map(params![experiment, run_id], |r| {
                Ok(MetricPoint { step: r.get::<_, i64>(0)? as u64, name: r.get(1)?, value: r.get(2)?, ts_ms: r.get(3)? })
            })?;
            rows.collect()
        })
        .await
    }

    async fn metric_series(
        &self,
        experiment: &str,
        run_id: &str,
        name: &str,
        steps: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<(u64, f64)>> {
        let (experiment, run_id, name) = (experiment.to_owned(), run_id.to_owned(), name.to_owned());
        // SQLite's integers are i64: a step past that was never stored.
        let clamp = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        let (from, to) = (clamp(*steps.start()), clamp(*steps.end()));
        self.with(move |c| {
            // The covering index `metrics_series` answers this without touching the table (a
            // read-only store of an earlier release has none: the same answer, slower). It
            // holds the rowid too, but orders a step's points by value: asking for
            // `ORDER BY step, rowid` made SQLite take `metrics_run` and read every metric's
            // points (17 s for a run of 10 metrics x 1 M points), so a step's points are put
            // in recording order here.
            let mut stmt = c.prepare_cached(
                "SELECT step, value, rowid FROM metrics WHERE experiment_id = ?1 AND run_id = ?2 \
                 AND name = ?3 AND step BETWEEN ?4 AND ?5 ORDER BY step",
            )?;
            let rows = stmt.query_map(params![experiment, run_id, name, from, to], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, f64>(1)?, r.get::<_, i64>(2)?))
            })?;
            let mut rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            // Ties (a step recorded again) are rare and adjacent: a stable sort by (step, rowid)
            // of an already step-ordered list costs one pass.
            rows.sort_by_key(|&(step, _, rowid)| (step, rowid));
            let points = rows.into_iter().map(|(step, value, _)| (step, value));
            Ok(tap_core::downsample::last_per_step(points))
        })
        .await
    }

    async fn metric_overview(
        &self,
        experiment: &str,
        run_id: &str,
        name: &str,
        steps: std::ops::RangeInclusive<u64>,
        buckets: usize,
    ) -> Result<Option<tap_store::Overview>> {
        if !self.tiled {
            return Ok(None);
        }
        let (experiment, run_id, name) = (experiment.to_owned(), run_id.to_owned(), name.to_owned());
        let clamp = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        let (from, to) = (clamp(*steps.start()), clamp(*steps.end()));
        self.with(move |c| {
            // The range's first and last point, exactly (two seeks in the covering index).
            let edge = |sql: &str| -> rusqlite::Result<Option<(u64, f64)>> {
                c.prepare_cached(sql)?
                    .query_row(params![experiment, run_id, name, from, to], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, f64>(1)?))
                    })
                    .optional()
            };
            let where_ =
                "FROM metrics WHERE experiment_id = ?1 AND run_id = ?2 AND name = ?3 AND step BETWEEN ?4 AND ?5";
            // Seeks, not scans: the index orders a step's points by value, so the last step's
            // later point is found among that step's points alone.
            let first = edge(&format!("SELECT step, value {where_} ORDER BY step LIMIT 1"))?;
            let last = edge(&format!(
                "SELECT step, value FROM metrics WHERE experiment_id = ?1 AND run_id = ?2 AND name = ?3 \
                 AND step = (SELECT max(step) {where_}) AND ?4 <= ?5 ORDER BY rowid DESC LIMIT 1"
            ))?;
            let (Some(first), Some(last)) = (first, last) else { return Ok(None) };
            let Some(level) = tiles::level_for(last.0 - first.0 + 1, buckets) else { return Ok(None) };
            let (mut points, n) = tiles::overview(c, (&experiment, &run_id, &name), level, first.0, last.0)?;
            points.retain(|p| p.0 != first.0 && p.0 != last.0);
            points.insert(0, first);
            points.push(last);
            Ok(Some((points, n)))
        })
        .await
    }
}

impl SqliteStore {
    async fn delete_where(&self, sql: &'static str, experiment: &str, run_id: &str) -> Result<usize> {
        let (e, id) = (experiment.to_owned(), run_id.to_owned());
        self.with(move |c| c.execute(sql, params![e, id])).await
    }
}

impl LogStore for SqliteStore {
    async fn append_logs(&self, experiment: &str, run_id: &str, lines: &[LogLine]) -> Result<()> {
        let (experiment, run_id, lines) = (experiment.to_owned(), run_id.to_owned(), lines.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare(
                    "INSERT OR IGNORE INTO logs (experiment_id, run_id, seq, ts_ms, stream, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for l in &lines {
                    stmt.execute(params![experiment, run_id, l.seq as i64, l.ts_ms, l.stream.as_str(), l.text])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn delete_logs(&self, experiment: &str, run_id: &str) -> Result<()> {
        self.delete_where("DELETE FROM logs WHERE experiment_id = ?1 AND run_id = ?2", experiment, run_id).await?;
        Ok(())
    }

    async fn logs(&self, experiment: &str, run_id: &str) -> Result<Vec<LogLine>> {
        let (experiment, run_id) = (experiment.to_owned(), run_id.to_owned());
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, ts_ms, stream, line FROM logs WHERE experiment_id = ?1 AND run_id = ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![experiment, run_id], |r| {
                Ok(LogLine {
                    seq: r.get::<_, i64>(0)? as u64,
                    ts_ms: r.get(1)?,
                    stream: if r.get::<_, String>(2)? == "stderr" { Stream::Stderr } else { Stream::Stdout },
                    text: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

fn param_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Param> {
    Ok(Param { name: r.get(0)?, version: r.get::<_, i64>(1)? as u64, value: r.get(2)?, modified_ms: r.get(3)? })
}

impl ParamStore for SqliteStore {
    async fn list_params(&self) -> Result<Vec<Param>> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT name, version, value, modified_ms FROM params p WHERE version = \
                 (SELECT MAX(version) FROM params q WHERE q.name = p.name) ORDER BY name",
            )?;
            let rows = stmt.query_map([], param_row)?;
            rows.collect()
        })
        .await
    }

    async fn get_param(&self, name: &str) -> Result<Option<Param>> {
        let name = name.to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT name, version, value, modified_ms FROM params WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                params![name],
                param_row,
            )
            .optional()
        })
        .await
    }

    async fn set_param(&self, name: &str, value: &str) -> Result<Param> {
        let now = crate::now_ms();
        let (name, value) = (name.to_owned(), value.to_owned());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let version: i64 =
                tx.query_row("SELECT COALESCE(MAX(version), 0) + 1 FROM params WHERE name = ?1", params![name], |r| {
                    r.get(0)
                })?;
            tx.execute(
                "INSERT INTO params (name, version, value, modified_ms) VALUES (?1, ?2, ?3, ?4)",
                params![name, version, value, now],
            )?;
            tx.commit()?;
            Ok(Param { name, value, version: version as u64, modified_ms: now })
        })
        .await
    }

    async fn unset_param(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.with(move |c| Ok(c.execute("DELETE FROM params WHERE name = ?1", params![name])? > 0)).await
    }

    async fn param_history(&self, name: &str) -> Result<Vec<Param>> {
        let name = name.to_owned();
        self.with(move |c| {
            let mut stmt =
                c.prepare("SELECT name, version, value, modified_ms FROM params WHERE name = ?1 ORDER BY version")?;
            let rows = stmt.query_map(params![name], param_row)?;
            rows.collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("tap.db")).expect("open");
        crate::store::conformance::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn two_writers_on_one_file_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tap.db");
        let a = SqliteStore::open(&path).expect("open");
        let b = SqliteStore::open(&path).expect("open");
        crate::store::conformance::concurrent_updates(&a, &b).await;
    }

    /// Regression: one corrupt row made every listing fail without naming it.
    #[tokio::test]
    async fn a_corrupt_row_is_left_out_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tap.db");
        let store = SqliteStore::open(&path).expect("open");
        for (id, t) in [("r1", 1), ("r2", 2)] {
            store.create_run(&Run::new("e", id, vec!["true".into()], "h", t)).await.expect("create");
        }
        let c = Connection::open(&path).expect("open");
        c.execute("UPDATE runs SET body = '{not json' WHERE run_id = 'r2'", []).expect("corrupt");
        let listing = store.list_runs(None).await.expect("the listing still works");
        assert_eq!(listing.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["r1"]);
        assert_eq!(listing.skipped.len(), 1);
        assert_eq!(listing.skipped[0].id, "r2");
        assert!(listing.skipped[0].to_string().starts_with("run record r2 is unreadable ("), "{}", listing.skipped[0]);
    }

    /// Regression (CI: a `tap runs list` polling during a `tap run`'s start failed with
    /// "database is locked": both were creating the database, and switching it to WAL does not
    /// wait for the busy timeout). Six openers of a new database at once, forty times.
    #[test]
    fn taps_opening_a_new_database_at_once_all_succeed() {
        for round in 0..40 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("tap.db");
            let barrier = Arc::new(std::sync::Barrier::new(6));
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        SqliteStore::open(&path).map(drop)
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("thread").unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }

    #[test]
    fn unopenable_path_is_named() {
        let e = SqliteStore::open(Path::new("/proc/tap/tap.db")).err().expect("fails").to_string();
        assert!(e.contains("/proc/tap"), "{e}");
    }
}

/// The chart tiles (issue 27): an overview of a long series from its tiles keeps a spike of
/// one step and the range's first and last point, and a store of an earlier release gets its
/// tiles when opened.
#[cfg(test)]
mod tile_tests {
    use super::*;
    use crate::store::RunStore;

    fn points(n: u64, spike: u64) -> Vec<MetricPoint> {
        (0..n)
            .map(|step| MetricPoint {
                step,
                name: "train/loss".into(),
                value: if step == spike { 50.0 } else { 1.0 / (1.0 + step as f64) },
                ts_ms: 0,
            })
            .collect()
    }

    async fn overview(s: &SqliteStore, steps: std::ops::RangeInclusive<u64>) -> Option<(Vec<(u64, f64)>, u64)> {
        s.metric_overview("e", "r", "train/loss", steps, 100).await.expect("overview")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_overview_keeps_the_spike_and_the_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("tap.db")).expect("open");
        s.create_run(&Run::new("e", "r", vec![], "h", 1)).await.expect("create");
        let all = points(200_000, 123_457);
        for chunk in all.chunks(7_777) {
            s.append_metrics("e", "r", chunk).await.expect("append");
        }
        let (candidates, n) = overview(&s, 0..=u64::MAX).await.expect("tiles serve a wide range");
        assert_eq!(n, 200_000);
        assert!(candidates.len() < 20_000, "{}", candidates.len());
        assert!(candidates.contains(&(123_457, 50.0)), "the spike");
        assert_eq!(candidates.first(), Some(&(0, 1.0)));
        assert_eq!(candidates.last(), Some(&(199_999, 1.0 / 200_000.0)));
        assert!(candidates.windows(2).all(|w| w[0].0 < w[1].0));
        // A zoomed range: its own ends; a narrow one is left to the points.
        let (z, _) = overview(&s, 100_001..=180_000).await.expect("still wide");
        assert_eq!((z.first().map(|p| p.0), z.last().map(|p| p.0)), (Some(100_001), Some(180_000)));
        assert!(z.contains(&(123_457, 50.0)));
        assert_eq!(overview(&s, 1_000..=2_000).await, None, "10 steps a bucket: read the points");
        assert_eq!(overview(&s, 300_000..=400_000).await, None, "no points there");
        assert!(s.delete_run("e", "r").await.expect("delete"));
        assert_eq!(overview(&s, 0..=u64::MAX).await, None);
        let left: i64 =
            s.with(|c| c.query_row("SELECT count(*) FROM metric_tiles", [], |r| r.get(0))).await.expect("n");
        assert_eq!(left, 0, "the tiles go with the run");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_of_an_earlier_release_gets_its_tiles_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tap.db");
        {
            let s = SqliteStore::open(&path).expect("open");
            s.create_run(&Run::new("e", "r", vec![], "h", 1)).await.expect("create");
            s.append_metrics("e", "r", &points(50_000, 777)).await.expect("append");
            // As version 2 left it: the points, no tiles.
            s.with(|c| c.execute_batch("DELETE FROM metric_tiles; PRAGMA user_version = 2")).await.expect("downgrade");
        }
        let s = SqliteStore::open(&path).expect("reopen");
        let (candidates, n) = overview(&s, 0..=u64::MAX).await.expect("backfilled");
        assert_eq!(n, 50_000);
        assert!(candidates.contains(&(777, 50.0)));
        let v: u32 = s.with(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0))).await.expect("version");
        assert_eq!(v, STORE_VERSION);
    }
}
