//! The environment variables between tap and the programs it starts: what `tap run` gives its
//! command ([`COMMAND`]) and what a managed job's rank gets on its node ([`NODE`], written by
//! `tap launch`'s node script). One definition, `spec/environment.json` at the repository
//! root: this module's test holds these constants to it, tapml's tests hold what tapml reads
//! to it, and docs/tapml.md documents every name.

pub const EXPERIMENT: &str = "TAP_EXPERIMENT";
pub const RUN_ID: &str = "TAP_RUN_ID";
pub const CHECKPOINT_DIR: &str = "TAP_CHECKPOINT_DIR";
pub const METRICS_FILE: &str = "TAP_METRICS_FILE";
pub const HPARAMS_FILE: &str = "TAP_HPARAMS_FILE";
pub const CHECKPOINT_ACK: &str = "TAP_CHECKPOINT_ACK";
pub const INTERRUPT_SIGNAL: &str = "TAP_INTERRUPT_SIGNAL";
pub const CHECKPOINT_DEADLINE_S: &str = "TAP_CHECKPOINT_DEADLINE_S";
pub const NOTICE_INFO: &str = "TAP_NOTICE_INFO";
pub const RESTORED_CHECKPOINT: &str = "TAP_RESTORED_CHECKPOINT";
pub const RESTORED_STEP: &str = "TAP_RESTORED_STEP";
pub const RESUMED_FROM: &str = "TAP_RESUMED_FROM";
/// In a sharded job (a managed job of several nodes, or `tap run --group`): this `tap run`'s
/// rank, whose shard its checkpoint directory is, and the job's number of ranks.
pub const SHARD_RANK: &str = "TAP_SHARD_RANK";
pub const WORLD_SIZE: &str = "TAP_WORLD_SIZE";
/// The checkpoint interval (seconds) the measured costs imply when the command starts
/// (tap_core::goodput::Cadence), and the file that carries it as it is measured again.
pub const CHECKPOINT_INTERVAL_S: &str = "TAP_CHECKPOINT_INTERVAL_S";
pub const CADENCE_FILE: &str = "TAP_CADENCE_FILE";
/// Every hyperparameter `NAME` is also `TAP_HP_<NAME>` (upper case, other characters `_`).
pub const HPARAM_PREFIX: &str = "TAP_HP_";

/// What `tap run` sets for its command (the restore's three only after a restore, the shard's
/// two only in a sharded job).
pub const COMMAND: [&str; 16] = [
    EXPERIMENT,
    RUN_ID,
    CHECKPOINT_DIR,
    METRICS_FILE,
    HPARAMS_FILE,
    CHECKPOINT_ACK,
    INTERRUPT_SIGNAL,
    CHECKPOINT_DEADLINE_S,
    NOTICE_INFO,
    RESTORED_CHECKPOINT,
    RESTORED_STEP,
    RESUMED_FROM,
    SHARD_RANK,
    WORLD_SIZE,
    CHECKPOINT_INTERVAL_S,
    CADENCE_FILE,
];

pub const MASTER_ADDR: &str = "MASTER_ADDR";
pub const MASTER_PORT: &str = "MASTER_PORT";
pub const NNODES: &str = "NNODES";
pub const NODE_RANK: &str = "NODE_RANK";
pub const RUN_GROUP: &str = "TAP_RUN_GROUP";
pub const RDZV_ID: &str = "RDZV_ID";
pub const JOB_ATTEMPT: &str = "TAP_JOB_ATTEMPT";

/// The rendezvous variables: a managed job's command may name them (`--nnodes=$NNODES`), and
/// the node's shell expands them there.
pub const RENDEZVOUS: [&str; 6] = [MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK, RUN_GROUP, RDZV_ID];

/// What a managed job's rank gets on its node: the rendezvous variables and the attempt.
pub const NODE: [&str; 7] = [MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK, RUN_GROUP, RDZV_ID, JOB_ATTEMPT];

/// `TAP_HP_<NAME>` for a hyperparameter name: upper case, every other character `_`.
pub fn hparam_variable(name: &str) -> String {
    let upper: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{HPARAM_PREFIX}{upper}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = include_str!("../../../spec/environment.json");

    fn names(spec: &serde_json::Value, key: &str, pick: impl Fn(&serde_json::Value) -> bool) -> Vec<String> {
        spec[key]
            .as_array()
            .unwrap_or_else(|| panic!("spec/environment.json: no {key} list"))
            .iter()
            .filter(|v| pick(v))
            .map(|v| v["name"].as_str().expect("a name").to_owned())
            .collect()
    }

    #[test]
    fn the_constants_are_the_shared_definition() {
        let spec: serde_json::Value = serde_json::from_str(SPEC).expect("spec/environment.json parses");
        assert_eq!(names(&spec, "command", |_| true), COMMAND, "what tap run sets");
        assert_eq!(names(&spec, "node", |_| true), NODE, "what a managed job's rank gets");
        assert_eq!(names(&spec, "node", |v| v["rendezvous"] == true), RENDEZVOUS);
        assert_eq!(spec["hparam_prefix"], HPARAM_PREFIX);
        for v in spec["command"].as_array().into_iter().flatten().chain(spec["node"].as_array().into_iter().flatten()) {
            assert!(v["meaning"].as_str().is_some_and(|m| !m.is_empty()), "{v}: no meaning");
        }
    }

    #[test]
    fn a_hyperparameter_variable_is_upper_case_with_underscores() {
        assert_eq!(hparam_variable("learning_rate"), "TAP_HP_LEARNING_RATE");
        assert_eq!(hparam_variable("train/lr"), "TAP_HP_TRAIN_LR");
        assert_eq!(hparam_variable("model.depth-2"), "TAP_HP_MODEL_DEPTH_2");
    }
}
