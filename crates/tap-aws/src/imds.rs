//! Instance metadata (IMDSv2), as tap and tap-agent both read it: the paths, the one client
//! (the SDK's: the session token is fetched and refreshed for us), whether metadata is on at
//! all, and one GET that tells "nothing to say" (404) from a failure. Never `ec2-metadata`,
//! which Ubuntu lacks.

use std::time::Duration;

use aws_config::imds;

pub const INSTANCE_ID: &str = "/latest/meta-data/instance-id";
pub const INSTANCE_TYPE: &str = "/latest/meta-data/instance-type";
pub const AVAILABILITY_ZONE: &str = "/latest/meta-data/placement/availability-zone";
pub const REGION: &str = "/latest/meta-data/placement/region";
pub const AMI_ID: &str = "/latest/meta-data/ami-id";
/// `spot`, `on-demand` or `scheduled`.
pub const INSTANCE_LIFE_CYCLE: &str = "/latest/meta-data/instance-life-cycle";
/// 404 until EC2 reclaims the spot instance.
pub const SPOT_INSTANCE_ACTION: &str = "/latest/meta-data/spot/instance-action";
/// 404 until EC2 recommends a rebalance.
pub const REBALANCE: &str = "/latest/meta-data/events/recommendations/rebalance";

/// What went wrong with instance metadata.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("instance metadata endpoint {endpoint}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("instance metadata {path}")]
    Get {
        path: &'static str,
        #[source]
        source: Box<aws_config::imds::client::error::ImdsError>,
    },
}

/// `AWS_EC2_METADATA_DISABLED=true` turns instance metadata off, as in the AWS SDKs.
pub fn disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether this machine looks like EC2 (DMI or the Xen hypervisor says so) or an endpoint is
/// named in `AWS_EC2_METADATA_SERVICE_ENDPOINT`: asked before metadata that is only nice to
/// have, so a laptop never waits on a metadata timeout.
pub fn worth_asking() -> bool {
    if disabled() {
        return false;
    }
    let named = std::env::var_os("AWS_EC2_METADATA_SERVICE_ENDPOINT").is_some();
    let vendor = std::fs::read_to_string("/sys/devices/virtual/dmi/id/board_vendor").unwrap_or_default();
    let hypervisor = std::fs::read_to_string("/sys/hypervisor/uuid").unwrap_or_default();
    named || vendor.trim() == "Amazon EC2" || hypervisor.starts_with("ec2")
}

/// How hard one question is tried.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub attempts: u32,
    pub connect: Duration,
    pub read: Duration,
}

impl Patience {
    /// For what a daemon needs to know (its identity, spot notices).
    pub const NEEDED: Patience =
        Patience { attempts: 2, connect: Duration::from_secs(1), read: Duration::from_secs(2) };
    /// For what is only recorded when it is there (a run's provenance).
    pub const NICE_TO_HAVE: Patience =
        Patience { attempts: 1, connect: Duration::from_secs(1), read: Duration::from_secs(1) };
}

/// An IMDSv2 client; the endpoint follows `AWS_EC2_METADATA_SERVICE_ENDPOINT` unless
/// `endpoint` is given (tests, an agent config that names one).
pub fn client(endpoint: Option<&str>, patience: Patience) -> Result<imds::Client, ImdsError> {
    let mut b = imds::Client::builder()
        .max_attempts(patience.attempts)
        .connect_timeout(patience.connect)
        .read_timeout(patience.read);
    if let Some(e) = endpoint {
        b = b.endpoint(e).map_err(|source| ImdsError::Endpoint { endpoint: e.to_owned(), source })?;
    }
    Ok(b.build())
}

/// GET `path`: `Ok(None)` on 404 (nothing to say), the body (trimmed) on 200.
pub async fn get(client: &imds::Client, path: &'static str) -> Result<Option<String>, ImdsError> {
    match client.get(path).await {
        Ok(v) => Ok(Some(v.as_ref().trim().to_owned())),
        Err(imds::client::error::ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
        Err(source) => Err(ImdsError::Get { path, source: Box::new(source) }),
    }
}

/// GET `path` where a 404 is as much a failure as any other: the value, or why not.
pub async fn require(client: &imds::Client, path: &'static str) -> Result<String, ImdsError> {
    client
        .get(path)
        .await
        .map(|v| v.as_ref().trim().to_owned())
        .map_err(|source| ImdsError::Get { path, source: Box::new(source) })
}
