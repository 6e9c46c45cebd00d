//! The opt-in `[idle]` rule on a node: every `check_seconds` the agent judges the whole fleet
//! (tap_fleet::idle: every GPU below the threshold every minute of the window, the oldest
//! reporting node decides) and, when it idled, sets the fleet's target capacity to zero.
//! Nothing else on the node changes: a fleet scaled to zero terminates its instances, and
//! `tap fleet scale N` brings it back.

use std::time::Duration;

use tap_fleet::aws::Fleet;
use tap_fleet::idle::{IdleRule, Verdict};

pub struct IdleWatch {
    sdk: aws_config::SdkConfig,
    instance_id: String,
    /// The agents' `Environment` dimension.
    environment: String,
    rule: IdleRule,
    every: Duration,
    /// The node's fleet as it becomes known (crate::node_fleet).
    node_fleet: crate::node_fleet::NodeFleet,
    /// Once known.
    fleet: Option<Fleet>,
    /// The managed jobs (the experiment table), when the stack runs them: while one is
    /// queued or running the fleet is never scaled to zero.
    jobs: Option<tap_store::jobs::JobStore>,
}

impl IdleWatch {
    pub fn new(
        sdk: aws_config::SdkConfig,
        instance_id: &str,
        environment: &str,
        rule: IdleRule,
        every: Duration,
        node_fleet: crate::node_fleet::NodeFleet,
    ) -> IdleWatch {
        IdleWatch {
            sdk,
            instance_id: instance_id.to_owned(),
            environment: environment.to_owned(),
            rule,
            every,
            node_fleet,
            fleet: None,
            jobs: None,
        }
    }

    /// Holds the fleet up while a managed job in `jobs` is active.
    pub fn with_jobs(mut self, jobs: tap_store::jobs::JobStore) -> IdleWatch {
        self.jobs = Some(jobs);
        self
    }

    /// One check: the verdict, after scaling the fleet to zero when it says so.
    pub async fn check(&mut self, now_ms: i64) -> anyhow::Result<Verdict> {
        let fleet = match self.fleet.take() {
            Some(f) => f,
            None => {
                let id = crate::node_fleet::now(&self.node_fleet).ok_or_else(|| {
                    anyhow::anyhow!("the fleet of {} is not known yet (set node.fleet_id)", self.instance_id)
                })?;
                Fleet::connect(&self.sdk, &id, &self.environment, "")
            }
        };
        let fleet = self.fleet.insert(fleet);
        let mut verdict = fleet.idle_verdict(Some(&self.instance_id), now_ms, &self.rule).await?.verdict;
        if let (Verdict::Idle { .. }, Some(jobs)) = (&verdict, &self.jobs) {
            // Only the deciding node of an idle fleet reads the queue (one Query).
            let active: Vec<(String, tap_core::jobs::JobState)> = jobs
                .list(true)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("the managed jobs are not known ({}); not scaling down", tap_core::text::chain(&e))
                })?
                .iter()
                .map(|e| match e {
                    tap_store::jobs::JobEntry::Job { job, .. } => (job.id.clone(), job.state),
                    tap_store::jobs::JobEntry::Corrupt { id, .. } => (id.clone(), tap_core::jobs::JobState::Queued),
                })
                .collect();
            verdict = tap_fleet::idle::hold_for_jobs(verdict, &active);
        }
        if matches!(verdict, Verdict::Idle { .. }) {
            fleet.scale(0).await?;
        }
        Ok(verdict)
    }

    /// The fleet's id, once known.
    fn fleet_id(&self) -> Option<&str> {
        self.fleet.as_ref().map(|f| f.fleet_id.as_str())
    }

    /// Checks every `every` until the agent stops; logs each new verdict once.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = String::new();
        loop {
            tick.tick().await;
            let said = match self.check(crate::daemon::now_ms()).await {
                Ok(v @ Verdict::Idle { .. }) => {
                    let line = v.describe(&self.rule);
                    tracing::warn!(fleet = self.fleet_id(), verdict = %line, "idle fleet: target capacity set to 0");
                    line
                }
                Ok(v) => v.describe(&self.rule),
                Err(e) => format!("idle rule not checked: {e:#}"),
            };
            if said != last {
                tracing::info!(fleet = self.fleet_id(), verdict = %said, "idle rule");
                last = said;
            }
        }
    }
}
