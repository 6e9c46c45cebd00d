//! Which EC2 Fleet this node belongs to: found once, in the background, for every part of
//! the agent that needs it (the idle rule and the job controller). EC2 being unreachable at
//! boot must not keep the agent from its telemetry, so nothing waits for it but those two.

use std::time::Duration;

use tap_core::text::chain;
use tap_fleet::aws::Fleet;
use tokio::sync::watch;

/// How often the fleet of this node is looked for, while it cannot be found.
pub const FIND_FLEET_EVERY: Duration = Duration::from_secs(60);

/// The node's fleet as it becomes known: `None` until found (at once when configured).
pub type NodeFleet = watch::Receiver<Option<String>>;

/// Starts looking: the configured fleet (`node.fleet_id`), else the one this instance belongs
/// to (its `aws:ec2:fleet-id` tag, else the active fleet that lists it), retried every
/// [`FIND_FLEET_EVERY`] and reported once per distinct problem, until found or the node is
/// `leaving`.
pub fn find(
    sdk: aws_config::SdkConfig,
    me: String,
    configured: Option<String>,
    mut leaving: watch::Receiver<bool>,
) -> NodeFleet {
    let (tx, rx) = watch::channel(configured.clone());
    if configured.is_some() {
        return rx;
    }
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            let problem = match Fleet::fleet_of(&sdk, &me).await {
                Ok(Some(id)) => {
                    tracing::info!(fleet = %id, "this node's fleet");
                    let _ = tx.send(Some(id));
                    return;
                }
                Ok(None) => {
                    format!("{me} belongs to no active EC2 Fleet (set node.fleet_id); looking again every minute")
                }
                Err(e) => format!("this node's fleet not found ({}); looking again every minute", chain(&e)),
            };
            if problem != last {
                tracing::warn!("{problem}");
                last = problem;
            }
            tokio::select! {
                () = tokio::time::sleep(FIND_FLEET_EVERY) => {}
                _ = leaving.changed() => return,
            }
        }
    });
    rx
}

/// Waits until the fleet is known; `None` when the search ended without it (the node is
/// leaving).
pub async fn known(mut fleet: NodeFleet) -> Option<String> {
    fleet.wait_for(Option::is_some).await.ok().and_then(|id| id.clone())
}

/// The fleet if known now.
pub fn now(fleet: &NodeFleet) -> Option<String> {
    fleet.borrow().clone()
}
