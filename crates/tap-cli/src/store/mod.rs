//! Where runs, metrics, logs and hyperparameters live: the traits and the stack's DynamoDB
//! backend (crate tap-store, shared with tap-agent), the embedded SQLite backend (the local
//! default), CloudWatch Logs and SSM Parameter Store, and a conformance suite every backend
//! passes.

#[cfg(test)]
pub mod conformance;
pub mod cwlogs;
pub mod sqlite;
pub mod ssm;
mod tiles;

pub use tap_store::{
    LogLine, LogStore, MAX_UPDATE_ATTEMPTS, Param, ParamStore, Result, RunStore, Runs, Skipped, StoreError, Stream,
    after_lost_write, dynamo,
};

/// The stack backends against moto on loopback (`--features aws-integration`).
#[cfg(all(test, feature = "aws-integration"))]
mod aws_tests {
    use tap_test_support::{Moto, free_port};

    use super::ParamStore;
    use super::conformance;
    use super::ssm::SsmParams;
    use tap_store::dynamo::DynamoStore;

    fn sdk_config(moto: &Moto) -> aws_config::SdkConfig {
        tap_test_support::aws::sdk_config(&moto.endpoint())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dynamodb_passes_the_conformance_suite() {
        let moto = Moto::from_env(free_port());
        let client = aws_sdk_dynamodb::Client::new(&sdk_config(&moto));
        tap_test_support::aws::create_table(&client, "tap-test-experiments").await;
        let store = DynamoStore::new(client.clone(), "tap-test-experiments");
        conformance::runs(&store).await;
        conformance::metrics(&store).await;
        let other = DynamoStore::new(client, "tap-test-experiments");
        conformance::concurrent_updates(&store, &other).await;
    }

    /// A stack from before the runs index: listings read the table itself.
    #[tokio::test(flavor = "multi_thread")]
    async fn dynamodb_without_the_runs_index_lists_from_the_table() {
        let moto = Moto::from_env(free_port());
        let client = aws_sdk_dynamodb::Client::new(&sdk_config(&moto));
        tap_test_support::aws::create_table_without_index(&client, "tap-test-old").await;
        let store = DynamoStore::new(client, "tap-test-old");
        conformance::runs(&store).await;
        conformance::metrics(&store).await;
    }

    /// The stack's own partitions (the job queue, the boot's driver-failure counters) never
    /// show in a listing, whatever their items look like.
    #[tokio::test(flavor = "multi_thread")]
    async fn dynamodb_listings_never_show_the_stacks_own_partitions() {
        use crate::store::RunStore;
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let moto = Moto::from_env(free_port());
        let client = aws_sdk_dynamodb::Client::new(&sdk_config(&moto));
        tap_test_support::aws::create_table(&client, "tap-test-reserved").await;
        let store = DynamoStore::new(client.clone(), "tap-test-reserved");
        store.create_run(&conformance::run("mnist", "r-1", 1)).await.expect("a real run");
        for partition in tap_core::runs::RESERVED_PARTITIONS {
            // Even an item shaped like a run is the stack's, not the user's.
            store.create_run(&conformance::run(partition, "r-x", 2)).await.expect("an item there");
            assert!(store.list_runs(Some(partition)).await.expect("list").runs.is_empty(), "{partition}");
        }
        client
            .put_item()
            .table_name("tap-test-reserved")
            .item("experiment_id", V::S(tap_core::runs::NODE_PARTITION.into()))
            .item("run_id", V::S("driver-failures/ami-0123".into()))
            .item("failures", V::N("2".into()))
            .send()
            .await
            .expect("the boot's counter");
        let listed = store.list_runs(None).await.expect("list");
        let ids: Vec<_> = listed.runs.iter().map(|r| format!("{}/{}", r.experiment_id, r.run_id)).collect();
        assert_eq!((ids, listed.skipped.len()), (vec!["mnist/r-1".to_owned()], 0));
    }

    /// Regression: one corrupt run item made every listing fail without naming it.
    #[tokio::test(flavor = "multi_thread")]
    async fn dynamodb_a_corrupt_run_item_is_left_out_and_named() {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let moto = Moto::from_env(free_port());
        let client = aws_sdk_dynamodb::Client::new(&sdk_config(&moto));
        tap_test_support::aws::create_table(&client, "tap-test-corrupt").await;
        let store = DynamoStore::new(client.clone(), "tap-test-corrupt");
        let good = tap_core::runs::Run::new("e", "good", vec!["true".into()], "h", 1);
        super::RunStore::create_run(&store, &good).await.expect("create");
        client
            .put_item()
            .table_name("tap-test-corrupt")
            .item("experiment_id", V::S("e".into()))
            .item("run_id", V::S("bad".into()))
            .item("kind", V::S("run".into()))
            .item("started_ms", V::N("2".into()))
            .item("body", V::S("{not json".into()))
            .item("version", V::N("1".into()))
            .send()
            .await
            .expect("PutItem");
        let listing = super::RunStore::list_runs(&store, Some("e")).await.expect("the listing still works");
        assert_eq!(listing.runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(listing.skipped.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["bad"]);
        assert!(listing.skipped[0].why.contains("corrupt run record"), "{:?}", listing.skipped);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dynamodb_missing_table_is_one_clear_error() {
        let moto = Moto::from_env(free_port());
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk_config(&moto)), "no-such-table");
        let e = super::RunStore::list_runs(&store, Some("e")).await.expect_err("fails").to_string();
        assert!(e.starts_with("DynamoDB Query") && e.contains("ResourceNotFoundException"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cloudwatch_logs_passes_the_conformance_suite() {
        let moto = Moto::from_env(free_port());
        let client = aws_sdk_cloudwatchlogs::Client::new(&sdk_config(&moto));
        client.create_log_group().log_group_name("/tap/test/training").send().await.expect("CreateLogGroup");
        let logs = super::cwlogs::CloudWatchLogs::new(client, "/tap/test/training");
        conformance::logs(&logs).await;
        assert!(super::LogStore::logs(&logs, "exp-m", "never-ran").await.expect("empty").is_empty());
    }

    /// S3's conditional write (If-None-Match: *) on moto: a record written once stays the first
    /// writer's, racing writers included.
    #[tokio::test(flavor = "multi_thread")]
    async fn s3_a_record_written_once_is_written_once() {
        let moto = Moto::from_env(free_port());
        let conf = aws_sdk_s3::config::Builder::from(&sdk_config(&moto)).force_path_style(true).build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        client.create_bucket().bucket("ml-model-artifacts-once").send().await.expect("CreateBucket");
        let store = crate::artifacts::s3::S3Store::new(client, "ml-model-artifacts-once", "tap");
        crate::artifacts::write_once_conformance(&store).await;
    }

    /// A sharded job's step on S3 (moto): two ranks store their shards at once and race to
    /// commit; one writes the commit, each gets its own shard back.
    #[tokio::test(flavor = "multi_thread")]
    async fn s3_two_ranks_commit_a_sharded_step_once() {
        use crate::artifacts::shards::{Committed, ShardTarget, latest_commit, restore, try_commit, upload_shard};
        let moto = Moto::from_env(free_port());
        let conf = aws_sdk_s3::config::Builder::from(&sdk_config(&moto)).force_path_style(true).build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        client.create_bucket().bucket("ml-model-artifacts-shards").send().await.expect("CreateBucket");
        let store = crate::artifacts::s3::S3Store::new(client, "ml-model-artifacts-shards", "tap");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut targets = Vec::new();
        for r in 0..2u32 {
            let src = dir.path().join(format!("src-{r}"));
            std::fs::create_dir_all(&src).expect("mkdir");
            std::fs::write(src.join(format!("shard-{r}.bin")), vec![r as u8; 100_000]).expect("write");
            targets.push((
                ShardTarget {
                    experiment: "llm".into(),
                    job: "job-s3".into(),
                    attempt: 1,
                    step: 7,
                    rank: r,
                    world_size: 2,
                },
                src,
            ));
        }
        let (a, b) = tokio::join!(
            upload_shard(&store, &targets[0].0, &targets[0].1),
            upload_shard(&store, &targets[1].0, &targets[1].1)
        );
        a.expect("rank 0");
        b.expect("rank 1");
        let (x, y) =
            tokio::join!(try_commit(&store, "llm", "job-s3", (1, 7)), try_commit(&store, "llm", "job-s3", (1, 7)));
        let outcomes = [x.expect("x"), y.expect("y")];
        assert_eq!(outcomes.iter().filter(|o| matches!(o, Committed::Now(_))).count(), 1, "{outcomes:?}");
        let latest = latest_commit(&store, "llm", "job-s3").await.expect("read").expect("committed");
        for r in 0..2u32 {
            let back = dir.path().join(format!("back-{r}"));
            restore(&store, &latest, (r, 2), false, &back).await.expect("restore");
            assert_eq!(std::fs::read(back.join(format!("shard-{r}.bin"))).expect("restored"), vec![r as u8; 100_000]);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn s3_checkpoints_round_trip_with_multipart_and_refuse_corruption() {
        use crate::artifacts::checkpoint;
        use crate::artifacts::s3::S3Store;
        let moto = Moto::from_env(free_port());
        let conf = aws_sdk_s3::config::Builder::from(&sdk_config(&moto)).force_path_style(true).build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        client.create_bucket().bucket("ml-model-artifacts-test").send().await.expect("CreateBucket");
        let opts = crate::artifacts::transfer::TransferOptions { part_size: 5 * 1024 * 1024, concurrency: 3 };
        let state = tempfile::tempdir().expect("tempdir");
        let store = S3Store::new(client.clone(), "ml-model-artifacts-test", "tap").with_transfer(
            6 * 1024 * 1024,
            opts,
            state.path(),
        );
        let src = tempfile::tempdir().expect("tempdir");
        let big: Vec<u8> = (0..13 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(src.path().join("model.pt"), &big).expect("write");
        std::fs::create_dir_all(src.path().join("opt")).expect("mkdir");
        std::fs::write(src.path().join("opt/state.json"), b"{}").expect("write");
        let m = checkpoint::save(
            &store,
            &crate::artifacts::checkpoint::CheckpointTarget::checkpoint("exp", "run-1", "run-1-0001", Some(5)),
            src.path(),
        )
        .await
        .expect("save");
        assert_eq!(checkpoint::latest(&store, "exp").await.expect("latest"), Some(m.clone()));
        let listed = crate::artifacts::ObjectStore::list(&store, "checkpoints/exp/objects/").await.expect("list");
        assert_eq!(listed.len(), 3, "two objects and the big one's part-checksum sidecar");
        assert!(listed.iter().any(|o| o.size == big.len() as u64), "the multipart object is whole");
        assert!(listed.iter().all(|o| o.modified_ms > 0), "listings say when (tap gc's grace period)");
        let dest = tempfile::tempdir().expect("tempdir");
        checkpoint::restore(&store, &m, dest.path()).await.expect("restore");
        assert_eq!(std::fs::read(dest.path().join("model.pt")).expect("read"), big);
        // Bit rot in the bucket: the restore refuses it and writes nothing.
        let key = format!("tap/{}", checkpoint::object_key("exp", &m.files[1].sha256));
        client
            .put_object()
            .bucket("ml-model-artifacts-test")
            .key(&key)
            .body(b"rot".to_vec().into())
            .send()
            .await
            .expect("put");
        let again = tempfile::tempdir().expect("tempdir");
        let e = checkpoint::restore(&store, &m, again.path()).await.expect_err("corrupt").to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        // No multipart upload is left behind.
        let uploads =
            client.list_multipart_uploads().bucket("ml-model-artifacts-test").send().await.expect("list uploads");
        assert!(uploads.uploads().is_empty());
        // `tap gc` and `tap runs delete`: DeleteObjects takes keys as tap names them.
        let keys: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
        crate::artifacts::ObjectStore::delete(&store, &keys).await.expect("DeleteObjects");
        crate::artifacts::ObjectStore::delete(&store, &keys).await.expect("deleting what is gone is fine");
        let left = crate::artifacts::ObjectStore::list(&store, "checkpoints/exp/objects/").await.expect("list");
        assert!(left.is_empty(), "{left:?}");
    }

    /// An upload killed midway resumes with the parts S3 already has; a download verifies
    /// every part against the upload's CRC32C sidecar. The first attempt's client fails every
    /// UploadPart after the second (tap_test_support::failing wraps the real client).
    #[tokio::test(flavor = "multi_thread")]
    async fn interrupted_upload_resumes_and_downloads_verify_parts() {
        use crate::artifacts::transfer::{self, TransferOptions};
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;
        use tap_test_support::failing::FailRequests;
        let moto = Moto::from_env(free_port());
        let conf = aws_sdk_s3::config::Builder::from(&sdk_config(&moto)).force_path_style(true).build();
        let client = aws_sdk_s3::Client::from_conf(conf);
        let parts_fail = FailRequests::after("partNumber=", 2);
        let dying = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk_config(&moto))
                .force_path_style(true)
                .interceptor(parts_fail.clone())
                .build(),
        );
        client.create_bucket().bucket("tap-transfer-test").send().await.expect("CreateBucket");
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("big.bin");
        let data: Vec<u8> =
            (0..(4 * 5 * 1024 * 1024 + 123) as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        std::fs::write(&src, &data).expect("write");
        let state = dir.path().join("state");
        let opts = TransferOptions { part_size: 5 * 1024 * 1024, concurrency: 1 };
        let progress = Arc::new(AtomicU64::new(0));
        let first = transfer::upload(
            &dying,
            transfer::S3Object { bucket: "tap-transfer-test", key: "k/big.bin" },
            &src,
            None,
            opts,
            &state,
            progress.clone(),
        )
        .await;
        let e = first.expect_err("the first attempt dies after two parts");
        assert!(tap_core::text::chain(&e).to_string().contains("failure injection"), "{e}");
        assert!(parts_fail.seen() >= 3, "the third part was tried");
        assert_eq!(std::fs::read_dir(&state).expect("state dir").count(), 1, "progress is on disk");
        let report = transfer::upload(
            &client,
            transfer::S3Object { bucket: "tap-transfer-test", key: "k/big.bin" },
            &src,
            None,
            opts,
            &state,
            progress,
        )
        .await
        .expect("resumes");
        assert_eq!((report.parts, report.parts_resumed, report.parts_sent), (5, 2, 3), "{report:?}");
        assert_eq!(std::fs::read_dir(&state).expect("state dir").count(), 0, "state removed when done");
        let dest = dir.path().join("back.bin");
        let sha = crate::artifacts::sha256_bytes(&data);
        let fast = TransferOptions { part_size: 5 * 1024 * 1024, concurrency: 4 };
        transfer::download(
            &client,
            transfer::S3Object { bucket: "tap-transfer-test", key: "k/big.bin" },
            &dest,
            Some(&sha),
            fast,
            Arc::new(AtomicU64::new(0)),
        )
        .await
        .expect("download");
        assert_eq!(std::fs::read(&dest).expect("read"), data);
        // Same size, other bytes in part 3: caught by the part checksum, nothing written.
        let mut evil = data.clone();
        evil[11 * 1024 * 1024] ^= 0xff;
        client
            .put_object()
            .bucket("tap-transfer-test")
            .key("k/big.bin")
            .body(evil.into())
            .send()
            .await
            .expect("overwrite");
        let dest2 = dir.path().join("evil.bin");
        let e = transfer::download(
            &client,
            transfer::S3Object { bucket: "tap-transfer-test", key: "k/big.bin" },
            &dest2,
            None,
            fast,
            Arc::new(AtomicU64::new(0)),
        )
        .await;
        let e = e.expect_err("corrupt part").to_string();
        assert!(e.contains("part 3") && e.contains("crc32c"), "{e}");
        assert!(!dest2.exists());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ssm_passes_the_conformance_suite_and_pages() {
        let moto = Moto::from_env(free_port());
        let client = aws_sdk_ssm::Client::new(&sdk_config(&moto));
        let params = SsmParams::new(client.clone(), "/ml/hparams", None);
        conformance::params(&params).await;
        // More parameters than one GetParametersByPath page (10).
        let many = SsmParams::new(client, "/ml/other", None);
        for i in 0..15 {
            many.set_param(&format!("p{i:02}"), &i.to_string()).await.expect("set");
        }
        let listed = many.list_params().await.expect("list");
        assert_eq!(listed.len(), 15);
        assert_eq!(listed[0].name, "p00", "names are relative to the prefix");
    }
}
