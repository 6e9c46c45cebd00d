//! `tap fleet pools [--days N]`: each spot pool's history from the store's runs
//! (tap_core::pools), and the order of instance types and AZs it advises.

use std::io::Write;

use tap_core::pools::{self, PoolStats};

use crate::cli::Output;
use crate::commands::{json, trainings};
use crate::store::RunStore;

const DAY_MS: i64 = 86_400_000;

/// What `tap fleet pools` shows.
#[derive(Debug, serde::Serialize)]
pub struct PoolsView {
    pub days: u32,
    pub pools: Vec<PoolStats>,
    /// Instance types and AZs from the fewest interruptions per node-hour to the most.
    pub instance_types: Vec<String>,
    pub availability_zones: Vec<String>,
    /// The lines to paste into the stack's tfvars (None: no EC2 pool on record).
    pub tfvars: Option<String>,
}

pub async fn run<R: RunStore>(runs: &R, days: u32, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let now = crate::now_ms();
    let view = view(&trainings(runs, None).await?, days, now);
    match output {
        Output::Json => json(out, &view)?,
        Output::Text => out.write_all(crate::render::pools(&view).as_bytes())?,
    }
    Ok(())
}

/// The pools of the last `days` of the store's trainings `all`, and the advice they give.
pub(crate) fn view(all: &[tap_core::runs::Run], days: u32, now: i64) -> PoolsView {
    let stats = pools::pool_stats(all, now - i64::from(days) * DAY_MS, now);
    let (instance_types, availability_zones) = pools::advice(&stats);
    let tfvars = pools::tfvars(&instance_types, &availability_zones);
    PoolsView { days, pools: stats, instance_types, availability_zones, tfvars }
}
