//! The failure a build record keeps, and `builds show` prints, is the same
//! message whichever shape the error reached teardown in: AWS's (a Lambda
//! Task's `Cause` is the function's error payload as a JSON string), the
//! plain text of a Fail state or an older local runner, or no cause at all
//! (a Task's `States.Timeout`).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use bakehouse::backends::local::{LocalBackend, LocalSettings};
use bakehouse::build::{BuildStore, SqliteBuildStore, Step};
use bakehouse::pipeline::{lambda_error_cause, Pipeline, PipelineSettings, StepError};
use bakehouse::registry::{Registry, SqliteStore};
use serde_json::json;

fn bakehouse(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bakehouse"))
        .arg("--db")
        .arg(home.join("registry.db"))
        .env("BAKEHOUSE_HOME", home)
        .args(args)
        .output()
        .unwrap()
}

fn pipeline(home: &Path) -> (Pipeline, Arc<dyn BuildStore>) {
    let store = SqliteStore::open(&home.join("registry.db")).unwrap();
    let builds: Arc<dyn BuildStore> = Arc::new(SqliteBuildStore::new(store.connection()).unwrap());
    let backend = LocalBackend::new(LocalSettings {
        work_root: home.join("work"),
        images_dir: home.join("images"),
        ..Default::default()
    });
    let pipeline = Pipeline::new(
        Registry::new(Arc::new(store)),
        builds.clone(),
        Arc::new(backend),
        PipelineSettings {
            scratch_dir: home.join("scratch"),
            fail_at: None,
        },
    );
    (pipeline, builds)
}

/// The `failed at ...` line of `builds show`.
fn failed_line(home: &Path, id: &str) -> String {
    let out = bakehouse(home, &["builds", "show", id]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    stdout
        .lines()
        .find(|l| l.starts_with("failed at "))
        .unwrap_or_else(|| {
            panic!(
                "no failure line for {id}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_string()
}

#[tokio::test]
async fn both_error_shapes_show_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (pipeline, builds) = pipeline(home);
    let error =
        StepError::BuildFailed("provisioners[0] failed with exit code 3: \"disk full\"".into());
    let shapes = [
        ("aws-shape", lambda_error_cause(&error)),
        ("plain-shape", error.message().to_string()),
    ];
    for (id, cause) in &shapes {
        let state = json!({"execution": id, "error": {"Error": "BuildFailed", "Cause": cause}});
        pipeline
            .invoke(Step::Teardown, json!({ "state": state }))
            .await
            .unwrap();
        let failure = builds.get(id).await.unwrap().unwrap().failure.unwrap();
        assert_eq!(failure.error, "BuildFailed");
        assert_eq!(failure.cause, error.message(), "{id}");
    }
    let aws = failed_line(home, "aws-shape");
    assert_eq!(aws, failed_line(home, "plain-shape"));
    assert_eq!(
        aws,
        format!("failed at launch: BuildFailed: {}", error.message())
    );

    // A Task timeout: AWS gives the error and no cause.
    let state = json!({"execution": "timed-out", "error": {"Error": "States.Timeout"}});
    pipeline
        .invoke(Step::Teardown, json!({ "state": state }))
        .await
        .unwrap();
    let line = failed_line(home, "timed-out");
    assert!(
        line.starts_with("failed at launch: States.Timeout: "),
        "{line}"
    );
    assert!(line.contains("TimeoutSeconds"), "{line}");
}
