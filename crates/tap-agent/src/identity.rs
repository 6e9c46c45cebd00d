//! Who and where this node is: region and instance id, from configuration, the environment
//! and IMDSv2 (never from `ec2-metadata`, which Ubuntu lacks).

use anyhow::{Context, bail};
use aws_config::imds;
use tap_core::agent_config::AgentConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub region: String,
    pub instance_id: String,
}

pub use tap_aws::imds::disabled as imds_disabled;

fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// The agent's IMDSv2 client (tap_aws::imds, with the patience of something it needs).
pub fn imds_client(endpoint: Option<&str>) -> Result<imds::Client, tap_aws::imds::ImdsError> {
    tap_aws::imds::client(endpoint, tap_aws::imds::Patience::NEEDED)
}

/// The instance type from IMDSv2 (`p3.2xlarge`), `None` when metadata cannot say.
pub async fn instance_type(client: &imds::Client) -> Option<String> {
    tap_aws::imds::require(client, tap_aws::imds::INSTANCE_TYPE).await.ok()
}

/// The node's Availability Zone from IMDSv2 (`placement/availability-zone`), at `endpoint`
/// when the config names one (tests do), else the default one unless metadata is disabled.
/// None when metadata cannot say: the network's series then carry `unknown`.
pub async fn availability_zone(endpoint: Option<&str>) -> Option<String> {
    if endpoint.is_none() && imds_disabled() {
        return None;
    }
    let client = imds_client(endpoint).ok()?;
    match tap_aws::imds::require(&client, tap_aws::imds::AVAILABILITY_ZONE).await {
        Ok(zone) => Some(zone),
        Err(e) => {
            tracing::warn!(error = %tap_core::text::chain(&e), "the node's Availability Zone is unknown (instance metadata); its network series say \"unknown\"");
            None
        }
    }
}

/// Resolves the identity. Instance id: IMDSv2, else `aws.instance_id`. Region:
/// `aws.region`, else `AWS_REGION`/`AWS_DEFAULT_REGION`, else IMDSv2.
pub async fn resolve(config: &AgentConfig, origin: &str) -> anyhow::Result<Identity> {
    let client = if imds_disabled() { None } else { Some(imds_client(None)?) };
    resolve_with(config, origin, client, env_region()).await
}

/// [`resolve`] with the metadata client (None: disabled) and the environment's region given.
pub async fn resolve_with(
    config: &AgentConfig,
    origin: &str,
    client: Option<imds::Client>,
    env_region: Option<String>,
) -> anyhow::Result<Identity> {
    let from_imds = async |path: &'static str| -> Option<Result<String, String>> {
        let c = client.as_ref()?;
        Some(tap_aws::imds::require(c, path).await.map_err(|e| tap_core::text::chain(&e).to_string()))
    };

    let instance_id = match (from_imds(tap_aws::imds::INSTANCE_ID).await, &config.aws.instance_id) {
        (Some(Ok(id)), _) => id,
        (_, Some(id)) => id.clone(),
        (Some(Err(e)), None) => {
            bail!("instance identity: instance metadata failed ({e}) and aws.instance_id is not set in {origin}")
        }
        (None, None) => bail!(
            "instance identity: instance metadata is disabled (AWS_EC2_METADATA_DISABLED) and aws.instance_id is not set in {origin}"
        ),
    };
    let region = match config.aws.region.clone().or(env_region) {
        Some(r) => r,
        None => from_imds(tap_aws::imds::REGION)
            .await
            .context("no region: set aws.region in the config or AWS_REGION")?
            .map_err(|e| anyhow::anyhow!("no region: aws.region is not set and instance metadata failed: {e}"))?,
    };
    Ok(Identity { region, instance_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tap_test_support::FakeImds;

    /// A loopback IMDSv2 (token required) with instance i-0fromimds in eu-north-1.
    fn fake_imds() -> FakeImds {
        let imds = FakeImds::start("i-0fromimds", "p3.2xlarge");
        imds.state.lock().expect("state").region = "eu-north-1".into();
        imds
    }

    fn config(text: &str) -> AgentConfig {
        AgentConfig::parse(text, "agent.toml").expect("valid")
    }

    #[tokio::test]
    async fn imdsv2_gives_instance_and_region() {
        let imds = fake_imds();
        let client = imds_client(Some(&imds.endpoint())).expect("client");
        let id = resolve_with(&config("[aws]\ninstance_id = \"i-0config\"\n"), "agent.toml", Some(client), None)
            .await
            .expect("resolves");
        assert_eq!(
            id,
            Identity { region: "eu-north-1".into(), instance_id: "i-0fromimds".into() },
            "IMDS wins over config"
        );
    }

    #[tokio::test]
    async fn configured_and_environment_regions_come_first() {
        let fake = fake_imds();
        let imds = imds_client(Some(&fake.endpoint())).expect("client");
        let id =
            resolve_with(&config(""), "agent.toml", Some(imds), Some("ap-south-1".into())).await.expect("resolves");
        assert_eq!(
            instance_type(&imds_client(Some(&fake.endpoint())).expect("client")).await.as_deref(),
            Some("p3.2xlarge")
        );
        assert_eq!(id.region, "ap-south-1");
    }

    #[tokio::test]
    async fn disabled_metadata_falls_back_to_config_or_says_why() {
        let id = resolve_with(
            &config("[aws]\ninstance_id = \"i-0config\"\nregion = \"us-west-2\"\n"),
            "agent.toml",
            None,
            None,
        )
        .await
        .expect("resolves");
        assert_eq!(id, Identity { region: "us-west-2".into(), instance_id: "i-0config".into() });
        let e =
            resolve_with(&config(""), "/etc/tap/agent.toml", None, None).await.expect_err("no identity").to_string();
        assert!(
            e.contains("AWS_EC2_METADATA_DISABLED")
                && e.contains("aws.instance_id")
                && e.contains("/etc/tap/agent.toml"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn unreachable_metadata_without_fallback_is_one_clear_error() {
        let dead = imds_client(Some("http://127.0.0.1:1")).expect("client");
        let e = resolve_with(&config(""), "agent.toml", Some(dead), None).await.expect_err("fails").to_string();
        assert!(e.starts_with("instance identity: instance metadata failed"), "{e}");
    }
}
