//! One error for every AWS SDK call tap makes (DynamoDB, S3, SSM, CloudWatch, CloudWatch
//! Logs, EC2): it names the call, carries the service's error code and message when the
//! service answered, says what kind of failure it was, and keeps the SDK's error as its
//! [`source`](std::error::Error::source) — so the top level prints the whole chain once
//! (`tap: error: S3 PutObject ckpt/x: dispatch failure: io error: …`) and callers can still
//! decide on the code or the kind.

pub mod imds;

/// Whether S3 is reached at a local endpoint (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`: moto,
/// MinIO), which has no per-bucket DNS names: its clients use path-style addresses.
pub fn s3_path_style() -> bool {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"].iter().any(|k| std::env::var_os(k).is_some())
}

use std::error::Error;
use std::fmt;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// What went wrong, as the SDK tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The service answered with an error (its code and message are kept).
    Service,
    /// No answer in time.
    Timeout,
    /// The request could not be sent (connection refused, DNS, TLS, credentials).
    Dispatch,
    /// An answer that could not be read.
    Response,
    /// The request could not be built (a missing required field: a bug on our side).
    Construction,
}

impl Kind {
    fn words(self) -> &'static str {
        match self {
            Kind::Service => "service error",
            Kind::Timeout => "request timed out",
            Kind::Dispatch => "dispatch failure",
            Kind::Response => "unreadable response",
            Kind::Construction => "request not built",
        }
    }
}

/// An AWS call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {}", self.what())]
pub struct AwsError {
    /// The call and what it was about, e.g. `S3 PutObject ckpt/run-1/000100/model.pt`.
    pub call: String,
    pub kind: Kind,
    /// The service's error code (`ThrottlingException`, `NoSuchKey`, …) when it answered.
    pub code: Option<String>,
    /// The service's error message when it answered.
    pub message: Option<String>,
    #[source]
    source: Box<dyn Error + Send + Sync + 'static>,
}

impl AwsError {
    fn what(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            _ => self.kind.words().to_owned(),
        }
    }

    /// Whether trying again later may succeed: no answer (network, timeout), throttling and
    /// limits, the service's own failures, and credentials that are not (yet) valid (a node's
    /// instance role right after boot). A request the service refused for what it says —
    /// validation, a missing resource — is not.
    pub fn is_retriable(&self) -> bool {
        match self.kind {
            Kind::Timeout | Kind::Dispatch | Kind::Response => true,
            Kind::Construction => false,
            Kind::Service => {
                self.code.as_deref().is_some_and(|code| RETRIABLE_CODE_PARTS.iter().any(|part| code.contains(part)))
            }
        }
    }

    /// Whether the service answered with this error code.
    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Parts of the error codes worth retrying, across the services tap calls (AWS error codes:
/// `ThrottlingException`, `Throttling`, `LimitExceededException`, `ServiceUnavailable`,
/// `InternalServerError`, `InternalFailure`, `RequestLimitExceeded`,
/// `ProvisionedThroughputExceededException`, `AccessDenied*` and `ExpiredToken*` while an
/// instance role's credentials settle).
const RETRIABLE_CODE_PARTS: &[&str] = &[
    "Throttl",
    "LimitExceeded",
    "ThroughputExceeded",
    "Unavailable",
    "InternalServ",
    "InternalFailure",
    "AccessDenied",
    "ExpiredToken",
];

/// An SDK error as an [`AwsError`] naming `call`: the one helper every AWS call goes through.
pub fn sdk_error<E, R>(call: impl fmt::Display, e: SdkError<E, R>) -> AwsError
where
    E: Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug,
{
    let kind = match &e {
        SdkError::ServiceError(_) => Kind::Service,
        SdkError::TimeoutError(_) => Kind::Timeout,
        SdkError::DispatchFailure(_) => Kind::Dispatch,
        SdkError::ResponseError(_) => Kind::Response,
        SdkError::ConstructionFailure(_) => Kind::Construction,
        _ => Kind::Response,
    };
    let code = e.code().map(str::to_owned);
    let message = e.message().map(str::to_owned);
    let source = match e.into_source() {
        Ok(source) => source,
        Err(e) => Box::new(Unsourced(e.to_string())),
    };
    AwsError { call: call.to_string(), kind, code, message, source }
}

/// The SDK's error had no cause of its own to keep: its words stand in.
#[derive(Debug)]
struct Unsourced(String);

impl fmt::Display for Unsourced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Unsourced {}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::result::{DispatchFailure, ServiceError, TimeoutError};
    use aws_smithy_types::error::ErrorMetadata;
    use tap_core::text::chain;

    /// A service's modelled error as the SDK generates it: metadata with code and message.
    #[derive(Debug)]
    struct Modelled(ErrorMetadata);
    impl fmt::Display for Modelled {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "unhandled error ({})", self.0.code().unwrap_or("?"))
        }
    }
    impl Error for Modelled {}
    impl ProvideErrorMetadata for Modelled {
        fn meta(&self) -> &ErrorMetadata {
            &self.0
        }
    }

    fn service(code: &str, message: &str) -> SdkError<Modelled, ()> {
        SdkError::ServiceError(
            ServiceError::builder()
                .source(Modelled(ErrorMetadata::builder().code(code).message(message).build()))
                .raw(())
                .build(),
        )
    }

    #[test]
    fn a_service_error_names_the_call_its_code_and_message_and_keeps_its_cause() {
        let e = sdk_error("S3 PutObject ckpt/a", service("AccessDenied", "Access Denied"));
        assert_eq!(e.to_string(), "S3 PutObject ckpt/a: AccessDenied: Access Denied");
        assert!(e.source().is_some(), "the SDK's error is kept");
        assert!(e.has_code("AccessDenied"));
        assert!(e.is_retriable(), "an instance role's credentials may not be valid yet");
        let validation = sdk_error("CloudWatch PutMetricData", service("InvalidParameterValue", "bad unit"));
        assert!(!validation.is_retriable(), "the service refused the request itself");
        assert!(
            sdk_error("DynamoDB PutItem", service("ProvisionedThroughputExceededException", "slow")).is_retriable()
        );
    }

    #[test]
    fn a_dispatch_failure_keeps_the_transport_error_as_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = sdk_error(
            "SSM GetParameter /tap/x",
            SdkError::<Modelled, ()>::DispatchFailure(
                DispatchFailure::builder()
                    .source(aws_smithy_runtime_api::client::result::ConnectorError::io(Box::new(io)))
                    .build(),
            ),
        );
        assert_eq!(e.kind, Kind::Dispatch);
        assert!(e.is_retriable());
        let shown = chain(&e).to_string();
        assert!(shown.starts_with("SSM GetParameter /tap/x: dispatch failure: "), "{shown}");
        assert!(shown.contains("Connection refused"), "the cause reaches the top level: {shown}");
    }

    #[test]
    fn a_timeout_is_retriable_and_says_so() {
        let e = sdk_error(
            "DynamoDB Query",
            SdkError::<Modelled, ()>::TimeoutError(TimeoutError::builder().source("slow".to_owned()).build()),
        );
        assert_eq!(e.to_string(), "DynamoDB Query: request timed out");
        assert!(e.is_retriable());
        assert_eq!(chain(&e).to_string(), "DynamoDB Query: request timed out: slow");
    }
}
