//! The build pipeline: `launch → provision → clean → capture → register`,
//! with `teardown` on every path. [`Pipeline`] holds the step handlers the
//! Lambda functions and the local runner call; [`BuilderBackend`] is the
//! seam to EC2 + SSM or the local sandbox.

mod backend;
pub mod bundle;
mod callback;
mod cancel;
mod error;
pub mod io;
pub mod local;
#[cfg(feature = "testing")]
pub mod simulate;
mod steps;

pub use backend::{BuildContext, BuilderBackend, Progress, ResolvedBase};
pub use callback::{SfnCallback, TaskCallback};
pub use cancel::{owned_by_another_live_process, Collected, CANCELLED};
pub use error::{failure_message, lambda_error_cause, StepError};
pub use steps::{
    build_path_component, load_for_build, load_for_build_with, Pipeline, PipelineSettings,
};
