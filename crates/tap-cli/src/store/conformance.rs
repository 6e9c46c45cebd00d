//! The behaviour every store backend must have (SQLite here; DynamoDB/SSM against moto).

use tap_core::runs::{HparamUse, MetricPoint, Run, RunStatus};

use super::{LogLine, LogStore, ParamStore, RunStore, StoreError, Stream};

pub fn run(exp: &str, id: &str, started: i64) -> Run {
    Run {
        instance_id: Some("i-0abc".into()),
        hparams: [(
            "lr".to_owned(),
            HparamUse { value: "0.1".into(), version: 3, source: tap_core::runs::ParamSource::Override },
        )]
        .into(),
        ..Run::new(exp, id, vec!["python3".into(), "train.py".into()], "node-1", started)
    }
}

pub async fn run_all<S: RunStore + ParamStore + LogStore>(s: &S) {
    runs(s).await;
    metrics(s).await;
    logs(s).await;
    params(s).await;
}

pub async fn runs<S: RunStore>(s: &S) {
    let r1 = run("exp-a", "r1", 1_000);
    assert_eq!(s.create_run(&r1).await.expect("create"), r1);
    assert_eq!(s.create_run(&r1).await.expect("idempotent"), r1, "creating the same run twice is fine");
    let mut other = r1.clone();
    other.host = "node-2".into();
    assert!(matches!(s.create_run(&other).await, Err(StoreError::Conflict(_))), "same ids, other content");
    s.create_run(&run("exp-a", "r2", 2_000)).await.expect("create");
    s.create_run(&run("exp-b", "r3", 1_500)).await.expect("create");
    assert_eq!(s.get_run("exp-a", "r1").await.expect("get"), Some(r1.clone()));
    assert_eq!(s.get_run("exp-a", "nope").await.expect("get"), None);
    let ids = |v: Vec<Run>| v.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_runs(Some("exp-a")).await.expect("list").runs), ["r2", "r1"], "newest first");
    assert_eq!(ids(s.list_runs(None).await.expect("list").runs), ["r2", "r3", "r1"]);
    let updated = s
        .update_run("exp-a", "r1", |r| {
            r.status = RunStatus::Succeeded;
            r.exit_code = Some(0);
        })
        .await
        .expect("update");
    assert_eq!(updated.status, RunStatus::Succeeded);
    assert_eq!(s.get_run("exp-a", "r1").await.expect("get").map(|r| r.exit_code), Some(Some(0)));
    assert!(matches!(s.update_run("exp-a", "nope", |_| {}).await, Err(StoreError::NotFound(_))));
    // A run's second attempt, with its name and restore, round-trips whole.
    let start = tap_core::runs::AttemptStart {
        host: "node-3".into(),
        instance_id: Some("i-0def".into()),
        started_ms: 5_000,
        supervisor: None,
        node_rank: None,
        job_attempt: None,
    };
    let resumed = s
        .update_run("exp-a", "r1", |r| {
            r.name = Some("first".into());
            r.begin_attempt(RunStatus::Interrupted, start.clone());
            r.restored = Some("r1-0004".into());
            r.restored_step = Some(40);
            r.recomputed_steps = 2;
        })
        .await
        .expect("a new attempt");
    assert_eq!(resumed.attempt(), 2);
    assert_eq!(s.get_run("exp-a", "r1").await.expect("get"), Some(resumed.clone()), "attempts round-trip");
    let all = resumed.all_attempts(resumed.status);
    assert_eq!(all.iter().map(|a| (a.number, a.host.as_str())).collect::<Vec<_>>(), [(1, "node-1"), (2, "node-3")]);
}

pub async fn metrics<S: RunStore>(s: &S) {
    s.create_run(&run("exp-m", "r1", 1)).await.expect("create");
    let points: Vec<MetricPoint> = (0..250)
        .flat_map(|step| {
            // Names the ecosystem writes, as long as the rule allows (regression: `train/loss`
            // was refused).
            let long = format!("eval/{}", "x".repeat(tap_core::names::MAX_NAME_LEN - 5));
            [("train/loss", 1.0 / (step as f64 + 1.0)), ("eval/acc@1", step as f64 / 250.0)]
                .map(|(n, v)| (n.to_owned(), v))
                .into_iter()
                .chain([(long, 1.0)])
                .map(move |(n, v)| MetricPoint { step, name: n, value: v, ts_ms: step as i64 })
        })
        .collect();
    s.append_metrics("exp-m", "r1", &points[..100]).await.expect("append");
    s.append_metrics("exp-m", "r1", &points[100..]).await.expect("append");
    assert_eq!(s.metrics("exp-m", "r1").await.expect("metrics"), points, "every point, in step order");
    assert!(s.metrics("exp-m", "other").await.expect("metrics").is_empty());
    // A chart's read: one metric, a range of steps, a step recorded again keeping its later value.
    let series = s.metric_series("exp-m", "r1", "train/loss", 10..=12).await.expect("series");
    assert_eq!(series, [10, 11, 12].map(|x| (x, 1.0 / (x as f64 + 1.0))));
    s.append_metrics("exp-m", "r1", &[MetricPoint { step: 249, name: "eval/acc@1".into(), value: -7.0, ts_ms: 999 }])
        .await
        .expect("a resumed attempt's step");
    let tail = s.metric_series("exp-m", "r1", "eval/acc@1", 248..=u64::MAX).await.expect("series");
    assert_eq!(tail, [(248, 248.0 / 250.0), (249, -7.0)], "the later point, though smaller");
    assert!(s.metric_series("exp-m", "r1", "no/such", 0..=u64::MAX).await.expect("series").is_empty());
    let listed = s.list_runs(Some("exp-m")).await.expect("list").runs;
    assert_eq!(listed.len(), 1, "metric storage does not show up as runs");
    // `tap runs delete`: the points and the record go; another run's stay.
    s.create_run(&run("exp-m", "r2", 2)).await.expect("create");
    s.append_metrics("exp-m", "r2", &points[..10]).await.expect("append");
    assert!(s.delete_run("exp-m", "r1").await.expect("delete"));
    assert_eq!(s.get_run("exp-m", "r1").await.expect("get"), None);
    assert!(s.metrics("exp-m", "r1").await.expect("metrics").is_empty());
    assert_eq!(s.metrics("exp-m", "r2").await.expect("metrics").len(), 10, "another run's points stay");
    assert!(!s.delete_run("exp-m", "r1").await.expect("again"), "a second delete finds nothing");
}

pub async fn logs<S: LogStore>(s: &S) {
    let now = crate::now_ms();
    let lines: Vec<LogLine> = (0..5)
        .map(|i| LogLine {
            seq: i,
            ts_ms: now + i as i64,
            stream: if i % 2 == 0 { Stream::Stdout } else { Stream::Stderr },
            text: format!("line {i} ✓"),
        })
        .collect();
    s.append_logs("exp-m", "r1", &lines[..3]).await.expect("logs");
    s.append_logs("exp-m", "r1", &lines[2..]).await.expect("re-sending a line is harmless");
    assert_eq!(s.logs("exp-m", "r1").await.expect("logs"), lines);
    s.delete_logs("exp-m", "r1").await.expect("delete");
    assert!(s.logs("exp-m", "r1").await.expect("logs").is_empty());
    s.delete_logs("exp-m", "r1").await.expect("deleting nothing is fine");
}

pub async fn params<S: ParamStore>(s: &S) {
    assert_eq!(s.get_param("learning_rate").await.expect("get"), None);
    let v1 = s.set_param("learning_rate", "0.001").await.expect("set");
    let v2 = s.set_param("learning_rate", "0.0005").await.expect("set");
    s.set_param("batch_size", "32").await.expect("set");
    s.set_param("optim/lr-AdamW@1", "3e-4").await.expect("a name SSM cannot hold as it is");
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(s.get_param("optim/lr-AdamW@1").await.expect("get").map(|p| p.value), Some("3e-4".into()));
    assert_eq!(s.get_param("learning_rate").await.expect("get").map(|p| p.value), Some("0.0005".into()));
    let listed: Vec<(String, String, u64)> =
        s.list_params().await.expect("list").into_iter().map(|p| (p.name, p.value, p.version)).collect();
    assert_eq!(
        listed,
        [
            ("batch_size".into(), "32".into(), 1),
            ("learning_rate".into(), "0.0005".into(), 2),
            ("optim/lr-AdamW@1".into(), "3e-4".into(), 1)
        ]
    );
    let history: Vec<String> =
        s.param_history("learning_rate").await.expect("history").into_iter().map(|p| p.value).collect();
    assert_eq!(history, ["0.001", "0.0005"]);
}

/// Four writers (two on each store handle) update the same run at the same time, as the
/// nodes of a job update its record: no update is lost.
pub async fn concurrent_updates<S: RunStore>(a: &S, b: &S) {
    a.create_run(&run("exp-c", "r1", 1)).await.expect("create");
    async fn bump<S: RunStore>(s: &S, key: &str) {
        for i in 0..25 {
            s.update_run("exp-c", "r1", |r| {
                r.final_metrics.insert(format!("{key}{i}"), i as f64);
            })
            .await
            .expect("update");
        }
    }
    // OS threads, so the read-modify-write cycles really interleave.
    std::thread::scope(|scope| {
        for (s, key) in [(a, "a"), (b, "b"), (a, "c"), (b, "d")] {
            scope.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(bump(s, key));
            });
        }
    });
    let run = a.get_run("exp-c", "r1").await.expect("get").expect("exists");
    assert_eq!(run.final_metrics.len(), 100, "every update from every writer is there");
}
