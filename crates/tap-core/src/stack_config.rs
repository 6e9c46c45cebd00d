//! The stack as `tap` sees it: the `tap_config` output of `infra/tap-stack.tf`, imported by
//! `tap stack import` into tap's own config file. A test holds the Rust fields and the
//! stack's output keys together.

use serde::{Deserialize, Serialize};

pub const STACK_CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetTag {
    pub key: String,
    pub value: String,
}

/// `terraform output -json tap_config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    pub version: u32,
    pub stack: String,
    pub environment: String,
    pub region: String,
    pub training_bucket: String,
    pub artifacts_bucket: String,
    pub table_name: String,
    pub log_group: String,
    pub hparam_prefix: String,
    pub metric_namespace: String,
    pub fleet_id: String,
    pub fleet_tag: FleetTag,
    pub launch_template_id: String,
    pub node_role_name: String,
    pub vpc_id: String,
    pub private_subnet_ids: Vec<String>,
    pub security_group_id: String,
    pub alarm_topic_arn: String,
    pub agent_binary_source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ImportError(pub String);

impl StackConfig {
    /// Reads either `terraform output -json` (all outputs) or `terraform output -json
    /// tap_config` (just the object), and checks it.
    pub fn from_terraform_output(text: &str) -> Result<StackConfig, ImportError> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ImportError(format!("not JSON (expected `terraform output -json`): {e}")))?;
        let obj = match v.get("tap_config") {
            // All outputs: {"tap_config": {"value": {...}, "type": ..., "sensitive": false}, ...}
            Some(o) => {
                o.get("value").cloned().ok_or_else(|| ImportError("output tap_config has no \"value\"".into()))?
            }
            None if v.get("artifacts_bucket").is_some() => v,
            None => {
                return Err(ImportError(
                    "no tap_config output: run `terraform output -json` in the directory of tap-stack.tf".into(),
                ));
            }
        };
        let c: StackConfig = serde_json::from_value(obj).map_err(|e| ImportError(format!("tap_config: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ImportError> {
        if self.version != STACK_CONFIG_VERSION {
            return Err(ImportError(format!(
                "tap_config version {} (this tap reads version {STACK_CONFIG_VERSION}; upgrade tap)",
                self.version
            )));
        }
        if self.metric_namespace != crate::contract::NAMESPACE {
            return Err(ImportError(format!(
                "the stack's metric namespace {:?} is not this tap's contract namespace {:?}: stack and tap versions differ",
                self.metric_namespace,
                crate::contract::NAMESPACE
            )));
        }
        if !self.hparam_prefix.starts_with('/') || self.hparam_prefix.ends_with('/') {
            return Err(ImportError(format!(
                "hparam_prefix {:?} must be an absolute path without trailing '/'",
                self.hparam_prefix
            )));
        }
        for (k, v) in
            [("region", &self.region), ("artifacts_bucket", &self.artifacts_bucket), ("table_name", &self.table_name)]
        {
            if v.is_empty() {
                return Err(ImportError(format!("tap_config.{k} is empty")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::stack_source;

    pub fn sample() -> StackConfig {
        StackConfig {
            version: 1,
            stack: "tap-dev".into(),
            environment: "dev".into(),
            region: "us-east-1".into(),
            training_bucket: "ml-training-data-dev".into(),
            artifacts_bucket: "ml-model-artifacts-dev".into(),
            table_name: "tap-dev-experiments".into(),
            log_group: "/tap/dev/training".into(),
            hparam_prefix: "/ml/hparams".into(),
            metric_namespace: "Tap/GPU".into(),
            fleet_id: "fleet-1".into(),
            fleet_tag: FleetTag { key: "TapFleet".into(), value: "tap-dev".into() },
            launch_template_id: "lt-1".into(),
            node_role_name: "tap-dev-node".into(),
            vpc_id: "vpc-1".into(),
            private_subnet_ids: vec!["subnet-a".into(), "subnet-b".into(), "subnet-c".into()],
            security_group_id: "sg-1".into(),
            alarm_topic_arn: "arn:aws:sns:us-east-1:123456789012:tap-dev-alarms".into(),
            agent_binary_source: "s3://ml-model-artifacts-dev/tap/bin/tap-agent".into(),
        }
    }

    #[test]
    fn reads_all_outputs_or_just_tap_config() {
        let obj = serde_json::to_value(sample()).expect("json");
        let all = serde_json::json!({"tap_config": {"value": obj, "type": [], "sensitive": false}, "vpc_id": {"value": "vpc-1"}});
        assert_eq!(StackConfig::from_terraform_output(&all.to_string()), Ok(sample()));
        assert_eq!(StackConfig::from_terraform_output(&obj.to_string()), Ok(sample()));
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        let e = |t: &str| StackConfig::from_terraform_output(t).expect_err("rejected").0;
        assert!(e("terraform: command not found").starts_with("not JSON"));
        assert!(e("{\"vpc_id\": {\"value\": \"x\"}}").contains("no tap_config output"));
        let mut c = sample();
        c.version = 2;
        assert!(e(&serde_json::to_string(&c).expect("json")).contains("version 2"));
        let mut c = sample();
        c.metric_namespace = "Other".into();
        assert!(e(&serde_json::to_string(&c).expect("json")).contains("namespace"));
        let mut v = serde_json::to_value(sample()).expect("json");
        v.as_object_mut().expect("object").remove("table_name");
        assert!(e(&v.to_string()).contains("table_name"));
    }

    /// The keys of the stack's `tap_config` output are exactly the fields above.
    #[test]
    fn stack_output_matches_the_struct() {
        let output = stack_source::output_value("tap_config");
        let stack_keys: std::collections::BTreeSet<String> =
            output.as_object().expect("tap_config is an object").keys().cloned().collect();
        let ours: std::collections::BTreeSet<String> =
            serde_json::to_value(sample()).expect("json").as_object().expect("object").keys().cloned().collect();
        assert_eq!(stack_keys, ours, "tap_config output and StackConfig differ");
        let node = stack_source::local("node_tap_config");
        let node_keys: std::collections::BTreeSet<String> =
            node.as_object().expect("node_tap_config is an object").keys().cloned().collect();
        assert_eq!(node_keys, ours, "local.node_tap_config (the nodes' copy) and StackConfig differ");
    }
}
