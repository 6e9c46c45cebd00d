//! `tap runs list` on the stack at 10,000 runs: the experiment table's `runs_by_start` index
//! against the previous version's read of the table itself, measured in the same run on moto.
//! `TAP_MOTO_SERVER=… cargo bench -p tap-store --bench list` (scripts/tools.sh installs moto);
//! TAP_BENCH_RUNS sets the number of runs (default 10,000), TAP_BENCH_CHUNKS the metric chunk
//! items per run (default 1, 200 points each: a short run; a long run has many more, which the
//! table read pays for and the index read does not).
//!
//! Both tables hold the same items: every run and its metric chunks in the experiment's
//! partition. Printed: items DynamoDB reads, pages (requests), and wall time for the listing,
//! and for a `--where loss<0.1 --sort loss --limit 10` query on top of it (the filter runs on
//! the listed records; the key design has no index per metric).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, Select, WriteRequest};
use tap_core::query::{Condition, Query, Sort};
use tap_core::runs::{MetricPoint, Run, RunStatus};
use tap_store::RunStore;
use tap_store::dynamo::{DynamoStore, RUNS_INDEX, metric_items, run_item};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The items of run `i`: its record and its metric chunks.
fn items_of(i: usize, chunks: usize) -> Vec<HashMap<String, AttributeValue>> {
    let id = format!("20261207T{:06}Z-{i:06x}", i % 240_000);
    let mut run =
        Run::new("sweep", &id, vec!["python3".into(), "train.py".into()], "node", 1_796_000_000_000 + i as i64);
    run.status = RunStatus::Succeeded;
    run.ended_ms = Some(run.started_ms + 3_600_000);
    let loss = 1.0 / (1.0 + i as f64);
    run.final_metrics.insert("loss".into(), loss);
    run.final_metrics.insert("train/acc@1".into(), 1.0 - loss);
    run.tags.insert("team".into(), if i.is_multiple_of(2) { "nlp" } else { "vision" }.into());
    let mut items = vec![run_item(&run, 1).expect("run item")];
    for c in 0..chunks {
        let points: Vec<MetricPoint> = (0..200)
            .map(|s| MetricPoint { step: (c * 200 + s) as u64, name: "loss".into(), value: loss, ts_ms: s as i64 })
            .collect();
        items.extend(metric_items("sweep", &id, &points, c as i64).expect("chunk"));
    }
    items
}

async fn fill(client: &Client, table: &str, items: &[HashMap<String, AttributeValue>]) {
    for batch in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = batch
            .iter()
            .map(|i| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(i.clone())).build().expect("put"))
                    .build()
            })
            .collect();
        // Bounded: unprocessed items are sent again, 100 times at most.
        for _ in 0..100 {
            let out =
                client.batch_write_item().request_items(table, requests.clone()).send().await.expect("BatchWriteItem");
            requests = out.unprocessed_items().and_then(|u| u.get(table)).cloned().unwrap_or_default();
            if requests.is_empty() {
                break;
            }
        }
    }
}

/// Items DynamoDB reads for the listing, and the pages (requests) it takes.
async fn cost(client: &Client, table: &str, index: bool) -> (u64, u64) {
    let (mut scanned, mut pages) = (0u64, 0u64);
    let mut start = None;
    for _ in 0..100_000 {
        let mut q = client
            .query()
            .table_name(table)
            .key_condition_expression("experiment_id = :e")
            .expression_attribute_values(":e", AttributeValue::S("sweep".into()))
            .select(Select::Count)
            .set_exclusive_start_key(start.take());
        if index {
            q = q.index_name(RUNS_INDEX);
        }
        let out = q.send().await.expect("Query");
        scanned += out.scanned_count() as u64;
        pages += 1;
        match out.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    (scanned, pages)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn timed_listing(store: &DynamoStore, query: Option<&Query>, rounds: usize) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut shown = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let runs = store.list_runs(Some("sweep")).await.expect("list").runs;
        shown = match query {
            Some(q) => q.apply(runs, 0).len(),
            None => runs.len(),
        };
        times.push(t.elapsed());
    }
    (median(times), shown)
}

#[tokio::main]
async fn main() {
    if std::env::var_os("TAP_MOTO_SERVER").is_none() {
        println!("list: skipped (set TAP_MOTO_SERVER; scripts/tools.sh installs moto)");
        return;
    }
    let (runs, chunks) = (env_usize("TAP_BENCH_RUNS", 10_000), env_usize("TAP_BENCH_CHUNKS", 1));
    let moto = tap_test_support::Moto::from_env(tap_test_support::free_port());
    let sdk = tap_test_support::aws::sdk_config(&moto.endpoint());
    let client = Client::new(&sdk);
    tap_test_support::aws::create_table(&client, "indexed").await;
    tap_test_support::aws::create_table_without_index(&client, "table-only").await;
    let t = Instant::now();
    let items: Vec<_> = (0..runs).flat_map(|i| items_of(i, chunks)).collect();
    fill(&client, "indexed", &items).await;
    fill(&client, "table-only", &items).await;
    println!(
        "list: {runs} runs, {chunks} metric chunk(s) each ({} items per table), filled in {:.0} s",
        items.len(),
        t.elapsed().as_secs_f64()
    );
    let query = Query {
        conditions: vec![Condition::parse("loss<0.1").expect("where")],
        sort: Some(Sort::parse("loss").expect("sort")),
        limit: Some(10),
        ..Query::default()
    };
    let indexed = DynamoStore::new(client.clone(), "indexed");
    let old = DynamoStore::new(client.clone(), "table-only");
    let (idx_read, idx_pages) = cost(&client, "indexed", true).await;
    let (old_read, old_pages) = cost(&client, "table-only", false).await;
    let (idx_t, idx_n) = timed_listing(&indexed, None, 3).await;
    let (old_t, old_n) = timed_listing(&old, None, 3).await;
    let (idx_q, idx_qn) = timed_listing(&indexed, Some(&query), 3).await;
    let (old_q, old_qn) = timed_listing(&old, Some(&query), 3).await;
    assert_eq!((idx_n, idx_qn), (old_n, old_qn), "both list the same runs");
    println!("{:<44} {:>12} {:>8} {:>10}", "", "items read", "pages", "wall");
    println!("{:<44} {:>12} {:>8} {:>8.2} s", "list (runs_by_start index)", idx_read, idx_pages, idx_t.as_secs_f64());
    println!(
        "{:<44} {:>12} {:>8} {:>8.2} s",
        "list (previous: the table, kind filter)",
        old_read,
        old_pages,
        old_t.as_secs_f64()
    );
    println!(
        "{:<44} {:>12} {:>8} {:>8.2} s",
        "--where loss<0.1 --sort loss --limit 10",
        idx_read,
        idx_pages,
        idx_q.as_secs_f64()
    );
    println!("{:<44} {:>12} {:>8} {:>8.2} s", "  the same, previous", old_read, old_pages, old_q.as_secs_f64());
    println!(
        "list: {idx_n} runs listed; the index reads {:.2}x the items and takes {:.2}x the time of the previous read",
        idx_read as f64 / old_read.max(1) as f64,
        idx_t.as_secs_f64() / old_t.as_secs_f64().max(1e-9)
    );
}
