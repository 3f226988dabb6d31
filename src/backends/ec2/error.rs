//! Mapping AWS SDK errors onto step errors: throttling, 5xx and transport
//! trouble are `Retryable`; validation and not-found are `NonRetryable`.

use std::fmt::Display;

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::pipeline::StepError;

/// Error codes that mean "try again later", whatever the HTTP status.
const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InsufficientInstanceCapacity",
    "IncorrectInstanceState",
    "InvalidSnapshot.InUse",
    "InvalidInstanceID.NotFound",
];

/// The error code of a failed call, if the service sent one.
pub(super) fn code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    err.code()
}

/// Whether a failed call says the thing it named does not exist.
pub(super) fn is_not_found<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    code(err).is_some_and(|c| {
        c.contains("NotFound")
            || c == "InvalidAMIID.Unavailable"
            || c == "InvocationDoesNotExist"
            || c == "InvalidCommandId"
    })
}

/// Classifies a failed call to `what` (e.g. `RunInstances in eu-west-1`).
pub(super) fn aws<E>(what: impl Display, err: SdkError<E, HttpResponse>) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            status >= 500
                || status == 429
                || code(&err).is_some_and(|c| RETRYABLE_CODES.contains(&c))
        }
        _ => false,
    };
    let text = format!("{what}: {}", DisplayErrorContext(&err));
    if retryable {
        tracing::warn!("{text}");
        StepError::Retryable(text)
    } else {
        StepError::NonRetryable(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;
    use aws_sdk_ec2::operation::run_instances::RunInstancesError;
    use aws_smithy_runtime_api::http::StatusCode;

    fn service_error(status: u16, code: &str) -> SdkError<RunInstancesError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("details")
            .build();
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), "".into());
        SdkError::service_error(RunInstancesError::generic(meta), raw)
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        for (status, code) in [
            (503, "RequestLimitExceeded"),
            (400, "Throttling"),
            (500, "InternalError"),
            (500, "Whatever"),
        ] {
            let e = aws("RunInstances", service_error(status, code));
            assert_eq!(e.name(), "Retryable", "{status} {code}");
            assert!(e.message().starts_with("RunInstances: "), "{e}");
        }
    }

    #[test]
    fn validation_and_not_found_are_not() {
        for code in [
            "InvalidParameterValue",
            "InvalidAMIID.NotFound",
            "UnauthorizedOperation",
        ] {
            assert_eq!(
                aws("RunInstances", service_error(400, code)).name(),
                "NonRetryable",
                "{code}"
            );
        }
        assert!(is_not_found(&service_error(400, "InvalidAMIID.NotFound")));
        assert!(is_not_found(&service_error(
            400,
            "InvalidSnapshot.NotFound"
        )));
        assert!(!is_not_found(&service_error(400, "InvalidParameterValue")));
    }
}
