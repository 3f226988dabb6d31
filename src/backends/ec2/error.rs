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
