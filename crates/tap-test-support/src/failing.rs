//! Failure injection for AWS SDK clients, in the shape of mountpoint-s3's `failure_client`:
//! the production code gets a real client that speaks the real protocol to moto, and an SDK
//! interceptor added to that client's configuration fails the requests a test picks — so
//! nothing in shipped code exists only for tests.
//!
//! ```
//! # use tap_test_support::failing::FailRequests;
//! let sdk = tap_test_support::aws::sdk_config("http://127.0.0.1:1");
//! let conf = aws_sdk_s3::config::Builder::from(&sdk).interceptor(FailRequests::after("partNumber=", 2)).build();
//! let _client = aws_sdk_s3::Client::from_conf(conf);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Lets the first `ok` requests whose URI contains `uri_part` through, then fails every later
/// one before it is sent, as a crash or a lost network would from the caller's side. Other
/// requests pass. Clones share the count.
#[derive(Debug, Clone)]
pub struct FailRequests {
    uri_part: &'static str,
    ok: u32,
    seen: Arc<AtomicU32>,
}

impl FailRequests {
    pub fn after(uri_part: &'static str, ok: u32) -> FailRequests {
        FailRequests { uri_part, ok, seen: Arc::new(AtomicU32::new(0)) }
    }

    /// Matching requests seen so far (passed and failed).
    pub fn seen(&self) -> u32 {
        self.seen.load(Ordering::SeqCst)
    }
}

/// The error a failed request carries.
#[derive(Debug)]
pub struct Injected(pub u32);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request {} failed by the test (failure injection)", self.0)
    }
}

impl std::error::Error for Injected {}

impl Intercept for FailRequests {
    fn name(&self) -> &'static str {
        "FailRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !context.request().uri().contains(self.uri_part) {
            return Ok(());
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n > self.ok { Err(Box::new(Injected(n))) } else { Ok(()) }
    }
}
