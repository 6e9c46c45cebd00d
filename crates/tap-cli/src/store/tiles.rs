//! The local store's chart tiles: for every metric of every run, at seven widths of steps (64
//! to 16,777,216, eight times wider each), each tile's point count and its lowest, highest and
//! last point, kept as points are appended (one upsert per tile a batch touches, in the append's
//! transaction). A chart of a million points then reads some thousands of tiles instead of
//! every point: `tap ui`'s run page of 10 metrics × 1,000,000 points went from 1.7 s to the
//! figure in README. Zoomed in far enough, a chart reads the points themselves.
//!
//! A step recorded again (a resumed attempt computes steps again) leaves the earlier value in
//! its tiles' extremes: an overview may show a value of a lost attempt; the points (zoomed in,
//! `tap runs show`) have only the later one.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

/// Tile widths in steps, by level (1 to 7): a chart reads at most eight tiles a bucket.
pub const WIDTHS: [u64; 7] = [64, 512, 4_096, 32_768, 262_144, 2_097_152, 16_777_216];

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS metric_tiles (
    experiment_id TEXT NOT NULL, run_id TEXT NOT NULL, name TEXT NOT NULL,
    level INTEGER NOT NULL, tile INTEGER NOT NULL, n INTEGER NOT NULL,
    min_step INTEGER NOT NULL, min_value REAL NOT NULL, max_step INTEGER NOT NULL, max_value REAL NOT NULL,
    last_step INTEGER NOT NULL, last_value REAL NOT NULL,
    PRIMARY KEY (experiment_id, run_id, name, level, tile)) WITHOUT ROWID;
";

/// One tile's summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tile {
    pub n: u64,
    pub min: (u64, f64),
    pub max: (u64, f64),
    pub last: (u64, f64),
}

impl Tile {
    fn of(step: u64, value: f64) -> Tile {
        Tile { n: 1, min: (step, value), max: (step, value), last: (step, value) }
    }

    /// Adds a point recorded after every point already in the tile.
    fn add(&mut self, step: u64, value: f64) {
        self.n += 1;
        // NaN is never an extreme (a tile of NaN alone keeps its first).
        if value < self.min.1 || self.min.1.is_nan() {
            self.min = (step, value);
        }
        if value > self.max.1 || self.max.1.is_nan() {
            self.max = (step, value);
        }
        if step >= self.last.0 {
            self.last = (step, value);
        }
    }
}

/// The tiles one batch of points (in recording order) touches: (name, level, tile) → summary.
pub fn fold<'a>(points: impl IntoIterator<Item = (&'a str, u64, f64)>) -> BTreeMap<(&'a str, u8, u64), Tile> {
    let mut out: BTreeMap<(&str, u8, u64), Tile> = BTreeMap::new();
    for (name, step, value) in points {
        for (i, w) in WIDTHS.iter().enumerate() {
            out.entry((name, i as u8 + 1, step / w))
                .and_modify(|t| t.add(step, value))
                .or_insert(Tile::of(step, value));
        }
    }
    out
}

/// Merges a batch's tiles into the stored ones (in the caller's transaction); a later batch's
/// last point wins a tie.
pub fn store(
    tx: &Connection,
    experiment: &str,
    run_id: &str,
    tiles: &BTreeMap<(&str, u8, u64), Tile>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO metric_tiles (experiment_id, run_id, name, level, tile, n, min_step, min_value, max_step, \
         max_value, last_step, last_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT (experiment_id, run_id, name, level, tile) DO UPDATE SET n = n + excluded.n, \
         min_step = CASE WHEN excluded.min_value < min_value OR min_value IS NULL THEN excluded.min_step ELSE min_step END, \
         min_value = CASE WHEN excluded.min_value < min_value OR min_value IS NULL THEN excluded.min_value ELSE min_value END, \
         max_step = CASE WHEN excluded.max_value > max_value OR max_value IS NULL THEN excluded.max_step ELSE max_step END, \
         max_value = CASE WHEN excluded.max_value > max_value OR max_value IS NULL THEN excluded.max_value ELSE max_value END, \
         last_step = CASE WHEN excluded.last_step >= last_step THEN excluded.last_step ELSE last_step END, \
         last_value = CASE WHEN excluded.last_step >= last_step THEN excluded.last_value ELSE last_value END",
    )?;
    for ((name, level, tile), t) in tiles {
        let s = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        stmt.execute(params![
            experiment,
            run_id,
            name,
            level,
            s(*tile),
            s(t.n),
            s(t.min.0),
            t.min.1,
            s(t.max.0),
            t.max.1,
            s(t.last.0),
            t.last.1
        ])?;
    }
    Ok(())
}

/// Builds every run's tiles from its points (a store of an earlier release, once), metric by
/// metric in step order through the covering index.
pub fn backfill(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM metric_tiles", [])?;
    let mut stmt = tx.prepare(
        "SELECT experiment_id, run_id, name, step, value FROM metrics ORDER BY experiment_id, run_id, name, step",
    )?;
    let mut rows = stmt.query([])?;
    let mut current: Option<(String, String, String)> = None;
    let mut batch: Vec<(u64, f64)> = Vec::new();
    let flush = |key: &Option<(String, String, String)>, batch: &mut Vec<(u64, f64)>| -> rusqlite::Result<()> {
        if let Some((e, r, n)) = key {
            let tiles = fold(batch.iter().map(|&(s, v)| (n.as_str(), s, v)));
            store(tx, e, r, &tiles)?;
        }
        batch.clear();
        Ok(())
    };
    while let Some(row) = rows.next()? {
        let key = (row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?);
        if current.as_ref() != Some(&key) || batch.len() >= 100_000 {
            flush(&current, &mut batch)?;
            current = Some(key);
        }
        batch.push((row.get::<_, i64>(3)? as u64, row.get::<_, f64>(4)?));
    }
    flush(&current, &mut batch)
}

/// The level of the widest tiles no wider than a bucket, for `span` steps in `buckets`
/// buckets (None: the range is narrow enough to read its points).
pub fn level_for(span: u64, buckets: usize) -> Option<u8> {
    let bucket = span / (buckets.max(1) as u64);
    WIDTHS.iter().rposition(|w| *w <= bucket).map(|i| i as u8 + 1)
}

/// A range's overview from the tiles of `level`: each tile's lowest, highest and last point
/// that fall in the range, in step order, and the points the tiles hold.
pub fn overview(
    c: &Connection,
    key: (&str, &str, &str),
    level: u8,
    from: u64,
    to: u64,
) -> rusqlite::Result<(Vec<(u64, f64)>, u64)> {
    let w = WIDTHS[usize::from(level) - 1];
    let s = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    let mut stmt = c.prepare_cached(
        "SELECT n, min_step, min_value, max_step, max_value, last_step, last_value FROM metric_tiles \
         WHERE experiment_id = ?1 AND run_id = ?2 AND name = ?3 AND level = ?4 AND tile BETWEEN ?5 AND ?6 ORDER BY tile",
    )?;
    let mut points = Vec::new();
    let mut n = 0u64;
    let rows = stmt.query_map(params![key.0, key.1, key.2, level, s(from / w), s(to / w)], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            [
                (r.get::<_, i64>(1)? as u64, r.get::<_, f64>(2)?),
                (r.get::<_, i64>(3)? as u64, r.get::<_, f64>(4)?),
                (r.get::<_, i64>(5)? as u64, r.get::<_, f64>(6)?),
            ],
        ))
    })?;
    for row in rows {
        let (count, mut three) = row?;
        n += count;
        three.sort_by_key(|p| p.0);
        points.extend(three.into_iter().filter(|p| (from..=to).contains(&p.0)));
    }
    points.dedup_by_key(|p| p.0);
    Ok((points, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_folds_into_its_tiles_at_every_level() {
        let pts: Vec<(&str, u64, f64)> = (0..200u64).map(|s| ("loss", s, if s == 70 { 9.0 } else { 1.0 })).collect();
        let t = fold(pts);
        assert_eq!(t.len(), 4 + 6, "4 tiles of 64 steps at level 1, one at each other level");
        let second = t[&("loss", 1, 1)];
        assert_eq!((second.n, second.max, second.last), (64, (70, 9.0), (127, 1.0)));
        assert_eq!(t[&("loss", 7, 0)].n, 200);
    }

    #[test]
    fn the_level_is_the_widest_no_wider_than_a_bucket() {
        assert_eq!(level_for(1_000_000, 1_000), Some(2), "1000 steps a bucket: tiles of 512");
        assert_eq!(level_for(100_000_000, 1_000), Some(4), "100,000 steps a bucket: tiles of 32,768");
        assert_eq!(level_for(100_000, 1_000), Some(1), "100 steps a bucket: tiles of 64");
        assert_eq!(level_for(50_000, 1_000), None, "50 steps a bucket: the points");
    }
}
