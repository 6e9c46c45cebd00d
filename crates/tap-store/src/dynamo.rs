//! Runs and metrics in the stack's DynamoDB table (partition `experiment_id`, sort `run_id`).
//!
//! Item layout, sized for DynamoDB's 400 KB item limit however long a run trains:
//! - the run: `run_id` = the run id, `kind` = "run", `version` (conditional writes),
//!   `started_ms`, `status`, and `body`, the JSON of the record (bounded: command,
//!   hyperparameters, last value per metric);
//! - its step metrics in chunk items beside it: `run_id` = `<run id>#m#<time>-<random>`,
//!   `kind` = "metrics", `points` = compact JSON of at most [`POINTS_PER_ITEM`] points
//!   (≤ ~300 KB even with 256-character metric names). One query reads them back in order.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use tap_core::runs::{MetricPoint, Run};

use tap_aws::sdk_error;

use crate::{MAX_UPDATE_ATTEMPTS, Result, RunStore, StoreError, after_lost_write};

/// Metric points per chunk item.
pub const POINTS_PER_ITEM: usize = 1000;
/// DynamoDB's item size limit.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

pub struct DynamoStore {
    client: Client,
    table: String,
    /// Set once the table turned out to have no [`RUNS_INDEX`] (a stack from before it):
    /// listings read the base table from then on.
    no_index: std::sync::atomic::AtomicBool,
}

/// The cache key of a pool's mean spot price over `[from_ms, to_ms]`, to the second.
pub fn spot_price_key(instance_type: &str, availability_zone: &str, from_ms: i64, to_ms: i64) -> String {
    format!("spot-price/{instance_type}/{availability_zone}/{}-{}", from_ms / 1000, to_ms / 1000)
}

/// The sparse index of run items by start time (`infra/tap-stack.tf`): only run items carry
/// `started_ms`, so a listing reads run records alone, never the metric chunks that share
/// their partition. Eventually consistent (a run started within the last second may not be
/// listed yet); reads of one run stay strongly consistent on the table.
pub const RUNS_INDEX: &str = "runs_by_start";

/// A metric point as stored: `[step, name, value, ts_ms]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Packed(u64, String, f64, i64);

pub fn metrics_prefix(run_id: &str) -> String {
    format!("{run_id}#m#")
}

/// The item of a run record.
pub fn run_item(run: &Run, version: u64) -> Result<HashMap<String, AttributeValue>> {
    let body = serde_json::to_string(run).map_err(|e| StoreError::backend("DynamoDB run item", e))?;
    Ok(HashMap::from([
        ("experiment_id".to_owned(), AttributeValue::S(run.experiment_id.clone())),
        ("run_id".to_owned(), AttributeValue::S(run.run_id.clone())),
        ("kind".to_owned(), AttributeValue::S("run".to_owned())),
        ("version".to_owned(), AttributeValue::N(version.to_string())),
        ("started_ms".to_owned(), AttributeValue::N(run.started_ms.to_string())),
        ("status".to_owned(), AttributeValue::S(run.status.as_str().to_owned())),
        ("body".to_owned(), AttributeValue::S(body)),
    ]))
}

/// A run record and its version from its item.
pub fn decode_run(item: &HashMap<String, AttributeValue>) -> Result<(Run, u64)> {
    let body = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt { what: "run item without body".into(), source: None })?;
    let run: Run = tap_core::runs::decode_run(body).map_err(|e| match e {
        tap_core::runs::DecodeError::Json(j) => StoreError::corrupt("corrupt run record", j),
        newer @ tap_core::runs::DecodeError::Newer(_) => StoreError::Corrupt { what: newer.to_string(), source: None },
    })?;
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Corrupt { what: "run item without version".into(), source: None })?;
    Ok((run, version))
}

/// Chunk items for `points`, each under [`POINTS_PER_ITEM`] points.
pub fn metric_items(
    experiment: &str,
    run_id: &str,
    points: &[MetricPoint],
    now_ms: i64,
) -> Result<Vec<HashMap<String, AttributeValue>>> {
    points
        .chunks(POINTS_PER_ITEM)
        .enumerate()
        .map(|(i, chunk)| {
            let packed: Vec<Packed> = chunk.iter().map(|p| Packed(p.step, p.name.clone(), p.value, p.ts_ms)).collect();
            // Time-ordered and unique even when two writers append in the same millisecond.
            let key = format!("{}{now_ms:013}-{i:04}-{:08x}", metrics_prefix(run_id), fastrand::u32(..));
            let text = serde_json::to_string(&packed).map_err(|e| StoreError::backend("DynamoDB metrics item", e))?;
            Ok(HashMap::from([
                ("experiment_id".to_owned(), AttributeValue::S(experiment.to_owned())),
                ("run_id".to_owned(), AttributeValue::S(key)),
                ("kind".to_owned(), AttributeValue::S("metrics".to_owned())),
                ("points".to_owned(), AttributeValue::S(text)),
            ]))
        })
        .collect()
}

pub fn decode_points(item: &HashMap<String, AttributeValue>) -> Result<Vec<MetricPoint>> {
    let text = item
        .get("points")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::Corrupt { what: "metrics item without points".into(), source: None })?;
    let packed: Vec<Packed> = serde_json::from_str(text).map_err(|e| StoreError::corrupt("corrupt metrics item", e))?;
    Ok(packed.into_iter().map(|Packed(step, name, value, ts_ms)| MetricPoint { step, name, value, ts_ms }).collect())
}

/// Approximate DynamoDB item size (attribute names + values).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    _ => 16,
                }
        })
        .sum()
}

/// Items one BatchWriteItem request takes (DynamoDB's limit).
const BATCH_WRITE_ITEMS: usize = 25;

/// The most pages one listing reads (1 MB each: far beyond 10,000 runs).
const MAX_PAGES: usize = 100_000;

/// Why reading [`RUNS_INDEX`] failed: it does not exist, or the read did.
enum IndexRead {
    Missing,
    Failed(StoreError),
}

impl IndexRead {
    /// `e` of a read of `index` (None: of the table itself).
    fn of<E, R>(index: Option<&str>, call: &str, e: aws_sdk_dynamodb::error::SdkError<E, R>) -> IndexRead
    where
        E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        // DynamoDB says ValidationException ("The table does not have the specified index"),
        // moto ResourceNotFoundException ("Invalid index"); a missing table says no "index".
        let missing = index.is_some()
            && e.as_service_error().is_some_and(|s| {
                matches!(s.code(), Some("ValidationException" | "ResourceNotFoundException"))
                    && s.message().is_some_and(|m| m.to_ascii_lowercase().contains("index"))
            });
        if missing { IndexRead::Missing } else { IndexRead::Failed(sdk_error(call, e).into()) }
    }
}

impl DynamoStore {
    pub fn new(client: Client, table: &str) -> DynamoStore {
        DynamoStore { client, table: table.to_owned(), no_index: std::sync::atomic::AtomicBool::new(false) }
    }

    /// A spot price `tap goodput` worked out before (USD per hour: an attempt's mean price in
    /// one pool over one span), kept in the stack's own partition under `key`
    /// ([`spot_price_key`]).
    pub async fn cached_spot_price(&self, key: &str) -> Result<Option<f64>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("experiment_id", AttributeValue::S(tap_core::runs::NODE_PARTITION.to_owned()))
            .key("run_id", AttributeValue::S(key.to_owned()))
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem", e))?;
        Ok(out.item().and_then(|i| i.get("usd_per_hour")).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()))
    }

    /// Keeps a spot price for [`DynamoStore::cached_spot_price`] (a price EC2 published does not
    /// change: written again, it is the same).
    pub async fn cache_spot_price(&self, key: &str, usd_per_hour: f64) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("experiment_id", AttributeValue::S(tap_core::runs::NODE_PARTITION.to_owned()))
            .item("run_id", AttributeValue::S(key.to_owned()))
            .item("usd_per_hour", AttributeValue::N(usd_per_hour.to_string()))
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB PutItem", e))?;
        Ok(())
    }

    async fn read(&self, experiment: &str, run_id: &str) -> Result<Option<(Run, u64)>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("experiment_id", AttributeValue::S(experiment.to_owned()))
            .key("run_id", AttributeValue::S(run_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem", e))?;
        out.item().map(decode_run).transpose()
    }

    /// Every run item of `experiment` (None: of every experiment), newest first, from
    /// [`RUNS_INDEX`]; from the table itself where the index does not exist.
    async fn run_items(&self, experiment: Option<&str>) -> Result<Vec<HashMap<String, AttributeValue>>> {
        use std::sync::atomic::Ordering;
        if !self.no_index.load(Ordering::Relaxed) {
            match self.indexed_run_items(experiment).await {
                Ok(items) => return Ok(items),
                Err(IndexRead::Missing) => self.no_index.store(true, Ordering::Relaxed),
                Err(IndexRead::Failed(e)) => return Err(e),
            }
        }
        self.items(experiment, None, "run").await
    }

    async fn indexed_run_items(
        &self,
        experiment: Option<&str>,
    ) -> std::result::Result<Vec<HashMap<String, AttributeValue>>, IndexRead> {
        self.read_pages(experiment, Some(RUNS_INDEX), None, "run").await
    }

    /// All items of a query or scan, following pagination.
    async fn items(
        &self,
        experiment: Option<&str>,
        sk_prefix: Option<&str>,
        kind: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        self.read_pages(experiment, None, sk_prefix, kind).await.map_err(|e| match e {
            IndexRead::Failed(e) => e,
            IndexRead::Missing => StoreError::message("DynamoDB: an index was read without being asked for"),
        })
    }

    /// Every item of `kind` in `experiment`'s partition (None: a scan of every partition),
    /// from the table (strongly consistent, `sk_prefix` as a key condition) or from `index`
    /// (newest first), following pagination for at most [`MAX_PAGES`] pages.
    async fn read_pages(
        &self,
        experiment: Option<&str>,
        index: Option<&str>,
        sk_prefix: Option<&str>,
        kind: &str,
    ) -> std::result::Result<Vec<HashMap<String, AttributeValue>>, IndexRead> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        let kind = AttributeValue::S(kind.to_owned());
        for _ in 0..MAX_PAGES {
            let (items, next) = match experiment {
                Some(exp) => {
                    let q = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .set_index_name(index.map(str::to_owned))
                        .expression_attribute_values(":e", AttributeValue::S(exp.to_owned()))
                        .expression_attribute_values(":k", kind.clone())
                        .expression_attribute_names("#k", "kind")
                        .filter_expression("#k = :k")
                        // An index is eventually consistent; the table is read consistently.
                        .set_consistent_read(index.is_none().then_some(true))
                        .scan_index_forward(index.is_none())
                        .set_exclusive_start_key(start.take());
                    let q = match sk_prefix {
                        Some(p) => q
                            .key_condition_expression("experiment_id = :e AND begins_with(run_id, :p)")
                            .expression_attribute_values(":p", AttributeValue::S(p.to_owned())),
                        None => q.key_condition_expression("experiment_id = :e"),
                    };
                    let r = q.send().await.map_err(|e| IndexRead::of(index, "DynamoDB Query", e))?;
                    (r.items().to_vec(), r.last_evaluated_key().cloned())
                }
                None => {
                    let r = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .set_index_name(index.map(str::to_owned))
                        .expression_attribute_values(":k", kind.clone())
                        .expression_attribute_names("#k", "kind")
                        .filter_expression("#k = :k")
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| IndexRead::of(index, "DynamoDB Scan", e))?;
                    (r.items().to_vec(), r.last_evaluated_key().cloned())
                }
            };
            out.extend(items);
            match next {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
        Err(IndexRead::Failed(StoreError::message(format!(
            "DynamoDB read of {}: more than {MAX_PAGES} pages",
            self.table
        ))))
    }
}

fn is_conditional_failure<R>(
    e: &aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError, R>,
) -> bool {
    e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception())
}

impl RunStore for DynamoStore {
    async fn create_run(&self, run: &Run) -> Result<Run> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(run_item(run, 1)?))
            .condition_expression("attribute_not_exists(run_id)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(run.clone()),
            Err(e) if is_conditional_failure(&e) => match self.read(&run.experiment_id, &run.run_id).await? {
                Some((stored, _)) if stored == *run => Ok(stored),
                _ => Err(StoreError::Conflict(format!(
                    "run {}/{} exists with other content",
                    run.experiment_id, run.run_id
                ))),
            },
            Err(e) => Err(sdk_error("DynamoDB PutItem", e).into()),
        }
    }

    async fn get_run(&self, experiment: &str, run_id: &str) -> Result<Option<Run>> {
        Ok(self.read(experiment, run_id).await?.map(|(r, _)| r))
    }

    async fn update_run<F>(&self, experiment: &str, run_id: &str, f: F) -> Result<Run>
    where
        F: Fn(&mut Run) + Send + Sync,
    {
        for attempt in 0..MAX_UPDATE_ATTEMPTS {
            let Some((mut run, version)) = self.read(experiment, run_id).await? else {
                return Err(StoreError::NotFound(format!("run {experiment}/{run_id}")));
            };
            f(&mut run);
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(run_item(&run, version + 1)?))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(run),
                Err(e) if is_conditional_failure(&e) => after_lost_write(attempt).await,
                Err(e) => return Err(sdk_error("DynamoDB PutItem", e).into()),
            }
        }
        Err(StoreError::Conflict(format!(
            "run {experiment}/{run_id}: {MAX_UPDATE_ATTEMPTS} concurrent updates in a row"
        )))
    }

    async fn list_runs(&self, experiment: Option<&str>) -> Result<crate::Runs> {
        let mut listing = crate::Runs::default();
        if experiment.is_some_and(tap_core::runs::reserved_partition) {
            return Ok(listing);
        }
        // The stack's own partitions (the job queue, the boot's counters) are never runs.
        let reserved = |item: &HashMap<String, AttributeValue>| {
            item.get("experiment_id").and_then(|v| v.as_s().ok()).is_some_and(|e| tap_core::runs::reserved_partition(e))
        };
        for item in self.run_items(experiment).await?.into_iter().filter(|i| !reserved(i)) {
            match decode_run(&item) {
                Ok((run, _)) => listing.runs.push(run),
                Err(e) => listing.skipped.push(crate::Skipped {
                    id: item.get("run_id").and_then(|v| v.as_s().ok()).map_or_else(|| "?".to_owned(), Clone::clone),
                    why: tap_core::text::chain(&e).to_string(),
                }),
            }
        }
        listing.runs.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then_with(|| b.run_id.cmp(&a.run_id)));
        Ok(listing)
    }

    async fn append_metrics(&self, experiment: &str, run_id: &str, points: &[MetricPoint]) -> Result<()> {
        for item in metric_items(experiment, run_id, points, tap_core::time::now_ms())? {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| sdk_error("DynamoDB PutItem", e))?;
        }
        Ok(())
    }

    async fn delete_run(&self, experiment: &str, run_id: &str) -> Result<bool> {
        use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};
        let key = |sk: &str| {
            HashMap::from([
                ("experiment_id".to_owned(), AttributeValue::S(experiment.to_owned())),
                ("run_id".to_owned(), AttributeValue::S(sk.to_owned())),
            ])
        };
        let chunks: Vec<String> = self
            .items(Some(experiment), Some(&metrics_prefix(run_id)), "metrics")
            .await?
            .iter()
            .filter_map(|i| i.get("run_id").and_then(|v| v.as_s().ok()).cloned())
            .collect();
        for batch in chunks.chunks(BATCH_WRITE_ITEMS) {
            let mut requests: Vec<WriteRequest> = batch
                .iter()
                .map(|sk| {
                    let delete = DeleteRequest::builder().set_key(Some(key(sk))).build();
                    delete.map(|d| WriteRequest::builder().delete_request(d).build())
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| StoreError::backend("DynamoDB BatchWriteItem", e))?;
            // Unprocessed deletes (throttling) are sent again, a bounded number of times.
            for attempt in 0..MAX_UPDATE_ATTEMPTS {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| sdk_error("DynamoDB BatchWriteItem", e))?;
                requests = out.unprocessed_items().and_then(|u| u.get(&self.table)).cloned().unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                after_lost_write(attempt).await;
            }
            if !requests.is_empty() {
                return Err(StoreError::message(format!(
                    "DynamoDB BatchWriteItem: {} metric chunks of {experiment}/{run_id} not deleted",
                    requests.len()
                )));
            }
        }
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(run_id)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB DeleteItem", e))?;
        Ok(out.attributes().is_some_and(|a| !a.is_empty()))
    }

    async fn metrics(&self, experiment: &str, run_id: &str) -> Result<Vec<MetricPoint>> {
        let mut points = Vec::new();
        // Items come back in sort-key (= time) order; a stable sort by step keeps it within a step.
        for item in self.items(Some(experiment), Some(&metrics_prefix(run_id)), "metrics").await? {
            points.extend(decode_points(&item)?);
        }
        points.sort_by_key(|p| p.step);
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(experiment: &str, run_id: &str, started_ms: i64) -> Run {
        Run::new(experiment, run_id, vec!["python3".into(), "train.py".into()], "laptop", started_ms)
    }

    #[test]
    fn worst_case_metric_item_fits() {
        let long = "m".repeat(tap_core::names::MAX_NAME_LEN);
        let points: Vec<MetricPoint> = (0..POINTS_PER_ITEM as u64)
            .map(|s| MetricPoint {
                step: u64::MAX - s,
                name: long.clone(),
                value: -1.234_567_890_123_456_7e-300,
                ts_ms: i64::MAX,
            })
            .collect();
        let items = metric_items("e".repeat(128).as_str(), &"r".repeat(128), &points, i64::MAX).expect("items");
        assert_eq!(items.len(), 1);
        assert!(item_size(&items[0]) < MAX_ITEM_BYTES, "{} bytes", item_size(&items[0]));
    }

    proptest! {
        #[test]
        fn run_items_round_trip(step in 0u64..1000, exit in proptest::option::of(-255i32..255), metric in -1e12f64..1e12) {
            let mut run = run("exp", "20261127T000000Z-abcdef", 7);
            run.exit_code = exit;
            run.final_metrics.insert("loss".into(), metric);
            run.metric_points = step;
            let (back, version) = decode_run(&run_item(&run, step + 1).expect("item")).expect("decodes");
            prop_assert_eq!(back, run);
            prop_assert_eq!(version, step + 1);
        }

        #[test]
        fn metric_items_round_trip(n in 0usize..2500, v in -1e9f64..1e9) {
            let points: Vec<MetricPoint> =
                (0..n as u64).map(|s| MetricPoint { step: s, name: format!("m{}", s % 3), value: v, ts_ms: s as i64 }).collect();
            let items = metric_items("e", "r", &points, 1).expect("items");
            prop_assert_eq!(items.len(), n.div_ceil(POINTS_PER_ITEM));
            let back: Vec<MetricPoint> = items.iter().flat_map(|i| decode_points(i).expect("decodes")).collect();
            prop_assert_eq!(back, points);
        }
    }

    #[test]
    fn corrupt_items_are_errors_not_panics() {
        let mut item = run_item(&run("e", "r", 1), 1).expect("item");
        item.insert("body".into(), AttributeValue::S("{".into()));
        assert!(decode_run(&item).expect_err("corrupt").to_string().contains("corrupt run record"));
        item.remove("body");
        assert!(decode_run(&item).is_err());
        let bad = HashMap::from([("points".to_owned(), AttributeValue::S("[[1]]".into()))]);
        assert!(decode_points(&bad).expect_err("corrupt").to_string().contains("corrupt metrics item"));
    }
}
