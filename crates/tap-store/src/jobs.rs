//! Managed jobs and the job controller's lease in the stack's experiment table, beside the
//! runs (no table of their own: the stack's IAM and backups already cover this one).
//!
//! Items (partition `experiment_id`, sort `run_id`; `#` is not allowed in experiment names,
//! so these partitions never meet a user's experiment, and `kind` keeps them out of run
//! listings):
//! - a job: `#jobs` / job id, `kind` = "job", `version` (optimistic concurrency), `state`
//!   (for the active-jobs filter), `body` = the JSON of its [`JobRecord`]. Job ids sort by
//!   submission time, so one Query returns the queue in FIFO order;
//! - the lease: `#controller` / `lease`, `kind` = "lease", with [`LeaseItem`]'s fields as
//!   attributes (see `tap_core::lease` for the protocol).
//!
//! Every write the controller makes to a job is fenced: a transaction of a ConditionCheck on
//! the lease ("holder = me and epoch = mine") and the job's own conditional write, so a
//! controller that lost its lease cannot change a job however stale its view.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, ReturnValue, TransactWriteItem};
use tap_core::jobs::{JobRecord, JobState};
use tap_core::lease::{LEASE_MS, LeaseItem};

use tap_aws::sdk_error;

use crate::{Result, StoreError};

/// The partition of job items.
pub use tap_core::runs::JOBS_PARTITION;
/// The lease item's key.
pub const LEASE_PARTITION: &str = "#controller";
pub const LEASE_SORT: &str = "lease";
/// Query pages a job listing reads at most (1 MB each: tens of thousands of jobs).
pub const MAX_PAGES: usize = 100;

/// A job as listed: its record, or why its item cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEntry {
    Job { job: Box<JobRecord>, version: u64 },
    Corrupt { id: String, version: Option<u64>, state: Option<String>, problem: String },
}

impl JobEntry {
    pub fn id(&self) -> &str {
        match self {
            JobEntry::Job { job, .. } => &job.id,
            JobEntry::Corrupt { id, .. } => id,
        }
    }
}

/// The controller's right to write: the lease it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub epoch: u64,
}

/// How a lease renewal went.
#[derive(Debug, Clone, PartialEq)]
pub enum Renewal {
    Renewed(LeaseItem),
    /// Someone else holds it now (or it was released): stop acting.
    Lost,
}

pub struct JobStore {
    client: Client,
    table: String,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A fresh record version number for the lease.
fn new_rvn() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The item of a job at `version`.
pub fn job_item(job: &JobRecord, version: u64) -> Result<HashMap<String, AttributeValue>> {
    let body = serde_json::to_string(job).map_err(|e| StoreError::backend("DynamoDB job item", e))?;
    Ok(HashMap::from([
        ("experiment_id".to_owned(), s(JOBS_PARTITION)),
        ("run_id".to_owned(), s(&job.id)),
        ("kind".to_owned(), s("job")),
        ("version".to_owned(), n(version)),
        ("state".to_owned(), s(job.state.as_str())),
        ("body".to_owned(), AttributeValue::S(body)),
    ]))
}

/// A job item back: its record, or what is wrong with it.
pub fn decode_job(item: &HashMap<String, AttributeValue>) -> JobEntry {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let id = text("run_id").unwrap_or_else(|| "?".into());
    let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
    let corrupt = |problem: String| JobEntry::Corrupt { id: id.clone(), version, state: text("state"), problem };
    let Some(version) = version else { return corrupt("no version".into()) };
    let Some(body) = text("body") else { return corrupt("no body".into()) };
    match serde_json::from_str::<JobRecord>(&body) {
        Ok(job) if job.id == id => JobEntry::Job { job: Box::new(job), version },
        Ok(job) => corrupt(format!("its body names job {}", job.id)),
        Err(e) => corrupt(format!("its body is not a job record: {e}")),
    }
}

fn lease_key() -> HashMap<String, AttributeValue> {
    HashMap::from([("experiment_id".to_owned(), s(LEASE_PARTITION)), ("run_id".to_owned(), s(LEASE_SORT))])
}

/// The lease item back (absent fields: a lease never taken; a corrupt one reads as free, so a
/// broken item cannot stop the fleet's controller forever).
pub fn decode_lease(item: &HashMap<String, AttributeValue>) -> LeaseItem {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
    LeaseItem {
        holder: text("holder"),
        rvn: text("rvn"),
        epoch: num("epoch").unwrap_or(0).max(0) as u64,
        lease_ms: num("lease_ms").unwrap_or(LEASE_MS),
        renewed_ms: num("renewed_ms").unwrap_or(0),
        succession: text("succession").and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default(),
        queue_seq: num("queue_seq").unwrap_or(0).max(0) as u64,
    }
}

impl JobStore {
    pub fn new(client: Client, table: &str) -> JobStore {
        JobStore { client, table: table.to_owned() }
    }

    /// Writes a new job (state queued) and tells the controller (the lease's `queue_seq`).
    pub async fn submit(&self, job: &JobRecord) -> Result<()> {
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(job_item(job, 1)?))
            .condition_expression("attribute_not_exists(run_id)")
            .send()
            .await;
        match put {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                return Err(StoreError::Conflict(format!("job {} exists already", job.id)));
            }
            Err(e) => return Err(sdk_error("DynamoDB PutItem", e).into()),
        }
        self.bump_queue().await
    }

    /// Tells the controller that the queue changed.
    pub async fn bump_queue(&self) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lease_key()))
            .update_expression("ADD queue_seq :one SET kind = :k")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":k", s("lease"))
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB UpdateItem (queue)", e))?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobEntry>> {
        Ok(self.item(id).await?.as_ref().map(decode_job))
    }

    /// A job's raw item (consistent read).
    async fn item(&self, id: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("experiment_id", s(JOBS_PARTITION))
            .key("run_id", s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem", e))?;
        Ok(out.item().cloned())
    }

    /// Every job, oldest first (`active`: only those not finished).
    pub async fn list(&self, active: bool) -> Result<Vec<JobEntry>> {
        let mut out = Vec::new();
        let mut start = None;
        for _ in 0..MAX_PAGES {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("experiment_id = :p")
                .expression_attribute_values(":p", s(JOBS_PARTITION))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if active {
                q = q
                    .filter_expression("#s IN (:q, :st, :r, :rc)")
                    .expression_attribute_names("#s", "state")
                    .expression_attribute_values(":q", s(JobState::Queued.as_str()))
                    .expression_attribute_values(":st", s(JobState::Starting.as_str()))
                    .expression_attribute_values(":r", s(JobState::Running.as_str()))
                    .expression_attribute_values(":rc", s(JobState::Recovering.as_str()));
            }
            let page = q.send().await.map_err(|e| sdk_error("DynamoDB Query (jobs)", e))?;
            out.extend(page.items().iter().map(decode_job));
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
        Err(StoreError::message(format!("DynamoDB Query (jobs): more than {MAX_PAGES} pages of jobs")))
    }

    /// `tap jobs cancel`: asks the controller to cancel (not fenced: any user may ask; a
    /// conditional write on the version, retried, so the controller's writes are not lost).
    /// Returns the record as written (unchanged when it had ended already).
    pub async fn request_cancel(&self, id: &str, now_ms: i64) -> Result<JobRecord> {
        for attempt in 0..crate::MAX_UPDATE_ATTEMPTS {
            let (mut job, version) = match self.get(id).await? {
                None => return Err(StoreError::NotFound(format!("job {id}"))),
                Some(JobEntry::Corrupt { problem, .. }) => {
                    return Err(StoreError::Corrupt { what: format!("job {id} is corrupt: {problem}"), source: None });
                }
                Some(JobEntry::Job { job, version }) => (*job, version),
            };
            if job.state.is_final() || job.cancel_requested_ms.is_some() {
                return Ok(job);
            }
            job.cancel_requested_ms = Some(now_ms);
            job.updated_ms = now_ms;
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(job_item(&job, version + 1)?))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(version))
                .send()
                .await;
            match put {
                Ok(_) => {
                    self.bump_queue().await?;
                    return Ok(job);
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                    crate::after_lost_write(attempt).await;
                }
                Err(e) => return Err(sdk_error("DynamoDB PutItem", e).into()),
            }
        }
        Err(StoreError::Conflict(format!("job {id}: {} concurrent updates in a row", crate::MAX_UPDATE_ATTEMPTS)))
    }

    /// The controller's write of a job it read at `version`: returns the new version. Fails
    /// with [`StoreError::Fenced`] when `fence` no longer holds the lease, and with
    /// [`StoreError::Conflict`] when the job changed since it was read (read it again).
    pub async fn write_fenced(&self, job: &JobRecord, version: u64, fence: &Fence) -> Result<u64> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(job_item(job, version + 1)?))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(version))
            .build()
            .map_err(|e| StoreError::backend("DynamoDB Put", e))?;
        self.fenced(fence, put, &job.id).await?;
        Ok(version + 1)
    }

    /// Marks a job whose item cannot be read as failed, naming the reason (fenced; the body is
    /// kept as it was, for whoever wants to look).
    pub async fn fail_corrupt(&self, entry: &JobEntry, reason: &str, fence: &Fence) -> Result<()> {
        let JobEntry::Corrupt { id, version, .. } = entry else { return Ok(()) };
        let Some(mut item) = self.item(id).await? else { return Ok(()) };
        item.insert("state".into(), s(JobState::Failed.as_str()));
        item.insert("corrupt".into(), s(reason));
        item.insert("version".into(), n(version.unwrap_or(0) + 1));
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        put = match version {
            Some(v) => put.condition_expression("version = :v").expression_attribute_values(":v", n(*v)),
            None => put.condition_expression("attribute_not_exists(version)"),
        };
        self.fenced(fence, put.build().map_err(|e| StoreError::backend("DynamoDB Put", e))?, id).await
    }

    async fn fenced(&self, fence: &Fence, put: Put, id: &str) -> Result<()> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(lease_key()))
            .condition_expression("holder = :me AND epoch = :e")
            .expression_attribute_values(":me", s(&fence.holder))
            .expression_attribute_values(":e", n(fence.epoch))
            .build()
            .map_err(|e| StoreError::backend("DynamoDB ConditionCheck", e))?;
        let out = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) => {
                let reasons: Vec<Option<String>> = e
                    .as_service_error()
                    .and_then(|s| match s {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => {
                            Some(t.cancellation_reasons().iter().map(|r| r.code().map(str::to_owned)).collect())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                let failed = |k: usize| reasons.get(k).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed");
                if failed(0) {
                    Err(StoreError::Fenced(format!(
                        "{} no longer holds the controller's lease (epoch {}): job {id} not written",
                        fence.holder, fence.epoch
                    )))
                } else if failed(1) {
                    Err(StoreError::Conflict(format!("job {id} changed since it was read")))
                } else {
                    Err(sdk_error("DynamoDB TransactWriteItems", e).into())
                }
            }
        }
    }

    pub async fn read_lease(&self) -> Result<Option<LeaseItem>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(lease_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("DynamoDB GetItem (lease)", e))?;
        Ok(out.item().map(decode_lease))
    }

    /// Takes the lease: `expect_rvn` is the rvn that stood a whole lease time (None: the lease
    /// is free), `succession` the other nodes as this one sees them (written at once, so a
    /// holder that dies before its first renewal still leaves an order behind). Returns the
    /// lease as taken, or None when another node was faster.
    pub async fn take_lease(
        &self,
        me: &str,
        expect_rvn: Option<&str>,
        succession: &[String],
        now_ms: i64,
    ) -> Result<Option<LeaseItem>> {
        let order = serde_json::to_string(succession).map_err(|e| StoreError::backend("DynamoDB lease", e))?;
        let mut u = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lease_key()))
            .update_expression(
                "SET holder = :me, rvn = :new, epoch = if_not_exists(epoch, :zero) + :one, lease_ms = :l, renewed_ms = :now, succession = :none, kind = :k",
            )
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":new", s(&new_rvn()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":l", n(LEASE_MS))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":none", AttributeValue::S(order))
            .expression_attribute_values(":k", s("lease"))
            .return_values(ReturnValue::AllNew);
        u = match expect_rvn {
            Some(r) => u.condition_expression("rvn = :seen").expression_attribute_values(":seen", s(r)),
            None => u.condition_expression("attribute_not_exists(holder)"),
        };
        match u.send().await {
            Ok(out) => Ok(out.attributes().map(decode_lease)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem (take lease)", e).into()),
        }
    }

    /// Renews the lease held with `rvn` (and writes the succession when given).
    pub async fn renew_lease(
        &self,
        me: &str,
        rvn: &str,
        succession: Option<&[String]>,
        now_ms: i64,
    ) -> Result<Renewal> {
        let mut expr = "SET rvn = :new, renewed_ms = :now".to_owned();
        let mut u = self.client.update_item().table_name(&self.table).set_key(Some(lease_key()));
        if let Some(list) = succession {
            expr.push_str(", succession = :s");
            let text = serde_json::to_string(list).map_err(|e| StoreError::backend("DynamoDB lease", e))?;
            u = u.expression_attribute_values(":s", AttributeValue::S(text));
        }
        let out = u
            .update_expression(expr)
            .condition_expression("holder = :me AND rvn = :old")
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":old", s(rvn))
            .expression_attribute_values(":new", s(&new_rvn()))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.attributes().map(decode_lease).map_or(Renewal::Lost, Renewal::Renewed)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Ok(Renewal::Lost)
            }
            Err(e) => Err(sdk_error("DynamoDB UpdateItem (renew lease)", e).into()),
        }
    }

    /// Hands the lease over (on a spot notice, at shutdown): the next in line takes it at
    /// its next read instead of after a lease time.
    pub async fn release_lease(&self, me: &str, rvn: &str) -> Result<bool> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(lease_key()))
            .update_expression("REMOVE holder SET rvn = :new")
            .condition_expression("holder = :me AND rvn = :old")
            .expression_attribute_values(":me", s(me))
            .expression_attribute_values(":old", s(rvn))
            .expression_attribute_values(":new", s(&new_rvn()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(sdk_error("DynamoDB UpdateItem (release lease)", e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tap_core::jobs::JobSpec;

    pub(super) fn job(id: &str) -> JobRecord {
        let spec = JobSpec {
            experiment: "llm".into(),
            command: vec!["python3".into(), "train.py".into()],
            nodes: 2,
            user: "ubuntu".into(),
            env: Default::default(),
            master_port: 29500,
            restarts: 3,
            retry_on_error: 0,
            timeout_s: 3600,
            resume: false,
            wait_s: tap_core::jobs::DEFAULT_WAIT_S,
            allow_cross_az: false,
            tags: Default::default(),
        };
        JobRecord::new(id, spec, "me@laptop", 1000)
    }

    #[test]
    fn job_items_round_trip_and_corrupt_ones_are_named() {
        let j = job("20261201T000000Z-000001");
        let item = job_item(&j, 4).expect("item");
        assert_eq!(decode_job(&item), JobEntry::Job { job: Box::new(j.clone()), version: 4 });
        let mut bad = item.clone();
        bad.insert("body".into(), s("{\"id\": 1"));
        match decode_job(&bad) {
            JobEntry::Corrupt { id, version, problem, .. } => {
                assert_eq!((id.as_str(), version), ("20261201T000000Z-000001", Some(4)));
                assert!(problem.starts_with("its body is not a job record"), "{problem}");
            }
            e => panic!("{e:?}"),
        }
        let mut other = item;
        other.insert("run_id".into(), s("someone-else"));
        assert!(
            matches!(decode_job(&other), JobEntry::Corrupt { ref problem, .. } if problem.contains("names job 2026"))
        );
    }

    #[test]
    fn a_lease_item_missing_fields_reads_as_free() {
        let l = decode_lease(&HashMap::from([("queue_seq".to_owned(), n(3))]));
        assert_eq!((l.holder, l.rvn, l.epoch, l.queue_seq, l.lease_ms), (None, None, 0, 3, LEASE_MS));
    }
}

/// The job store and the lease against moto on loopback (`--features aws-integration`).
#[cfg(all(test, feature = "aws-integration"))]
mod aws_tests {
    use super::*;
    use tap_test_support::{Moto, free_port};

    async fn store(moto: &Moto) -> JobStore {
        let client = Client::new(&tap_test_support::aws::sdk_config(&moto.endpoint()));
        tap_test_support::aws::create_table(&client, "jobs-test").await;
        JobStore::new(client, "jobs-test")
    }

    use super::tests::job;

    #[tokio::test(flavor = "multi_thread")]
    async fn two_contenders_for_a_free_lease_get_one_winner_and_the_loser_is_fenced() {
        let moto = Moto::from_env(free_port());
        let jobs = store(&moto).await;
        jobs.submit(&job("j1")).await.expect("submit");
        assert_eq!(jobs.read_lease().await.expect("read").map(|l| (l.holder, l.queue_seq)), Some((None, 1)));
        let order = ["i-a".to_owned()];
        let (a, b) = tokio::join!(jobs.take_lease("i-a", None, &[], 1), jobs.take_lease("i-b", None, &order, 1));
        let (a, b) = (a.expect("a"), b.expect("b"));
        assert!(a.is_some() != b.is_some(), "exactly one takes a free lease: {a:?} {b:?}");
        let (winner, loser, lease) = match (a, b) {
            (Some(l), None) => ("i-a", "i-b", l),
            (None, Some(l)) => ("i-b", "i-a", l),
            other => panic!("exactly one takes a free lease: {other:?}"),
        };
        assert_eq!((lease.holder.as_deref(), lease.epoch, lease.queue_seq), (Some(winner), 1, 1));

        let Some(JobEntry::Job { job: mut j, version }) = jobs.get("j1").await.expect("get") else { panic!("job") };
        j.waiting = Some("needs 1 healthy node, fleet has 0".into());
        let stale = Fence { holder: loser.into(), epoch: 1 };
        let e = jobs.write_fenced(&j, version, &stale).await.expect_err("fenced");
        assert!(matches!(e, StoreError::Fenced(_)), "{e}");
        let fence = Fence { holder: winner.into(), epoch: 1 };
        let v2 = jobs.write_fenced(&j, version, &fence).await.expect("holder writes");
        assert_eq!(v2, version + 1);
        let e = jobs.write_fenced(&j, version, &fence).await.expect_err("stale version");
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");

        // Renewal, a take-over after the lease stood, and the old holder's renewal then fails.
        let rvn = lease.rvn.clone().expect("rvn");
        let Renewal::Renewed(renewed) =
            jobs.renew_lease(winner, &rvn, Some(&[loser.to_owned()]), 2).await.expect("renew")
        else {
            panic!("renewal")
        };
        assert_eq!(renewed.succession, [loser]);
        let seen = renewed.rvn.clone().expect("rvn");
        let taken = jobs.take_lease(loser, Some(&seen), &[], 3).await.expect("take").expect("taken");
        assert_eq!((taken.holder.as_deref(), taken.epoch), (Some(loser), 2));
        assert_eq!(jobs.renew_lease(winner, &seen, None, 4).await.expect("renew"), Renewal::Lost);
        let e = jobs.write_fenced(&j, v2, &fence).await.expect_err("the old holder is fenced");
        assert!(matches!(e, StoreError::Fenced(_)), "{e}");
        // Release: the lease is free for the next in line.
        assert!(jobs.release_lease(loser, taken.rvn.as_deref().expect("rvn")).await.expect("release"));
        assert_eq!(jobs.read_lease().await.expect("read").and_then(|l| l.holder), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_queue_lists_in_fifo_order_cancels_and_names_corrupt_jobs() {
        let moto = Moto::from_env(free_port());
        let jobs = store(&moto).await;
        for id in ["20261201T000002Z-000002", "20261201T000001Z-000001", "20261201T000003Z-000003"] {
            jobs.submit(&job(id)).await.expect("submit");
        }
        let e = jobs.submit(&job("20261201T000001Z-000001")).await.expect_err("twice");
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        let ids: Vec<String> = jobs.list(true).await.expect("list").iter().map(|e| e.id().to_owned()).collect();
        assert_eq!(ids, ["20261201T000001Z-000001", "20261201T000002Z-000002", "20261201T000003Z-000003"]);
        let c = jobs.request_cancel("20261201T000002Z-000002", 5).await.expect("cancel");
        assert_eq!(c.cancel_requested_ms, Some(5));
        assert_eq!(jobs.read_lease().await.expect("lease").map(|l| l.queue_seq), Some(4), "3 submits, 1 cancel");
        assert!(matches!(jobs.request_cancel("nope", 5).await, Err(StoreError::NotFound(_))));

        // A corrupt item: listed by name, then marked failed by the controller.
        jobs.client
            .put_item()
            .table_name("jobs-test")
            .item("experiment_id", s(JOBS_PARTITION))
            .item("run_id", s("20261201T000004Z-000004"))
            .item("kind", s("job"))
            .item("state", s("queued"))
            .item("version", n(1))
            .item("body", s("not json"))
            .send()
            .await
            .expect("put");
        let list = jobs.list(true).await.expect("list");
        let corrupt = list.iter().find(|e| matches!(e, JobEntry::Corrupt { .. })).expect("corrupt one").clone();
        assert_eq!(corrupt.id(), "20261201T000004Z-000004");
        let lease = jobs.take_lease("i-a", None, &[], 1).await.expect("take").expect("taken");
        let fence = Fence { holder: "i-a".into(), epoch: lease.epoch };
        jobs.fail_corrupt(&corrupt, "its body is not a job record", &fence).await.expect("mark");
        let active: Vec<String> = jobs.list(true).await.expect("list").iter().map(|e| e.id().to_owned()).collect();
        assert!(!active.contains(&"20261201T000004Z-000004".to_owned()), "{active:?}");
        assert_eq!(jobs.list(false).await.expect("all").len(), 4);
    }
}
