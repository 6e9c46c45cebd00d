//! Who and where this node is: region and instance id, from configuration, the environment
//! and IMDSv2 (never from `ec2-metadata`, which Ubuntu lacks).

use std::time::Duration;

use anyhow::{Context, bail};
use aws_config::imds;
use tap_core::agent_config::AgentConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub region: String,
    pub instance_id: String,
}

/// `AWS_EC2_METADATA_DISABLED=true` turns instance metadata off, as in the AWS SDKs.
pub fn imds_disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Resolves the identity. Instance id: IMDSv2, else `aws.instance_id`. Region:
/// `aws.region`, else `AWS_REGION`/`AWS_DEFAULT_REGION`, else IMDSv2.
pub async fn resolve(config: &AgentConfig, origin: &str) -> anyhow::Result<Identity> {
    let client = (!imds_disabled()).then(|| {
        imds::Client::builder()
            .max_attempts(2)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .build()
    });
    let from_imds = async |path: &str| -> Option<Result<String, String>> {
        let c = client.as_ref()?;
        Some(c.get(path).await.map(|v| v.as_ref().to_owned()).map_err(|e| e.to_string()))
    };

    let instance_id = match (from_imds("/latest/meta-data/instance-id").await, &config.aws.instance_id) {
        (Some(Ok(id)), _) => id,
        (_, Some(id)) => id.clone(),
        (Some(Err(e)), None) => {
            bail!("instance identity: instance metadata failed ({e}) and aws.instance_id is not set in {origin}")
        }
        (None, None) => bail!(
            "instance identity: instance metadata is disabled (AWS_EC2_METADATA_DISABLED) and aws.instance_id is not set in {origin}"
        ),
    };
    let region = match config.aws.region.clone().or_else(env_region) {
        Some(r) => r,
        None => from_imds("/latest/meta-data/placement/region")
            .await
            .context("no region: set aws.region in the config or AWS_REGION")?
            .map_err(|e| anyhow::anyhow!("no region: aws.region is not set and instance metadata failed: {e}"))?,
    };
    Ok(Identity { region, instance_id })
}
