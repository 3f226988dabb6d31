//! Lambda package benchmark: the size of each function's `bootstrap.zip`
//! (from `make package`) and each function's init time, measured as the
//! time from spawning the bootstrap to its first request to the Lambda
//! Runtime API (`GET /2018-06-01/runtime/invocation/next`), served by this
//! bench on 127.0.0.1. Median of several cold starts per function.
//!
//! Every function reads its typed config and builds its SDK clients in that
//! window; the webhook also reads its secret from SSM Parameter Store, here
//! a moto server on loopback. Targets: each zip under 8 MiB, init under 20 ms.
//!
//! Run with `make bench` (which runs `make package` first), or
//! `cargo bench --bench lambda_init` after `make package`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bakehouse::testing::moto;

/// Text only the test support (`bakehouse::testing`, fault injection)
/// puts into a binary. Release packages are stripped, so their strings, not
/// a symbol table, show whether the harness was linked.
const HARNESS_MARKERS: [&str; 3] = ["MOTO_PYTHON", "moto_server.py", "(fault injection)"];

/// Which harness markers a binary contains.
fn harness_markers(binary: &Path) -> Vec<&'static str> {
    let bytes = std::fs::read(binary).unwrap_or_default();
    HARNESS_MARKERS
        .iter()
        .copied()
        .filter(|m| bytes.windows(m.len()).any(|w| w == m.as_bytes()))
        .collect()
}

/// Cold starts measured per function.
const RUNS: usize = 15;
/// Zip size target.
const MAX_ZIP: u64 = 8 * 1024 * 1024;
/// Init time target.
const MAX_INIT: Duration = Duration::from_millis(20);
/// The SSM parameter holding the webhook secret.
const SECRET_PARAMETER: &str = "/bakehouse/bench/webhook-secret";

/// Waits for the first Runtime API request of a process started now;
/// returns the time to it and the request line.
fn time_to_first_request(bootstrap: &Path, env: &[(String, String)]) -> (Duration, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = listener.local_addr().unwrap().to_string();
    // A blocking accept on its own thread: the measured process gets the
    // CPU rather than a polling loop.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let _ = tx.send((Instant::now(), line));
        }
    });
    let start = Instant::now();
    let mut child = Command::new(bootstrap)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bootstrap.display()));
    let (at, line) = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(got) => break got,
            Err(_) => {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                    }
                    panic!(
                        "{} exited ({status}) before asking for an event:\n{err}",
                        bootstrap.display()
                    );
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{} never asked for an event",
                    bootstrap.display()
                );
            }
        }
    };
    let took = at - start;
    let _ = child.kill();
    let _ = child.wait();
    (took, line.trim_end().to_string())
}

/// The package name of every function (`functions/test` is `test-step`:
/// `test` is Rust's own crate).
fn functions() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("functions")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("Cargo.toml")).ok())
        .filter_map(|manifest| {
            let line = manifest.lines().find(|l| l.starts_with("name = "))?;
            Some(
                line.trim_start_matches("name = ")
                    .trim_matches('"')
                    .to_string(),
            )
        })
        .collect();
    names.sort();
    names
}

/// The bootstrap inside a function's zip, extracted into `dir`.
fn extract(zip: &Path, dir: &Path) -> PathBuf {
    let out = Command::new("unzip")
        .args(["-o", "-q"])
        .arg(zip)
        .arg("bootstrap")
        .arg("-d")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unzip {}: {}",
        zip.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("bootstrap")
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = runtime
        .block_on(moto())
        .expect("moto server (make setup installs it)");
    let endpoint = moto.server().endpoint();
    runtime.block_on(async {
        let sdk = moto.sdk_config("us-east-1").await;
        aws_sdk_ssm::Client::new(&sdk)
            .put_parameter()
            .name(SECRET_PARAMETER)
            .value("bench-secret")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .expect("put the webhook secret");
    });
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    println!("Lambda packages (target/lambda/NAME/bootstrap.zip), init = spawn to first GET .../invocation/next, median of {RUNS}");
    println!(
        "  {:<10} {:>10} {:>10} {:>10} {:>10}  test harness",
        "function", "zip MiB", "init ms", "min ms", "max ms"
    );
    let mut with_harness = Vec::new();
    let mut worst_zip = 0;
    let mut worst_init = Duration::ZERO;
    for name in functions() {
        let zip = PathBuf::from(format!("target/lambda/{name}/bootstrap.zip"));
        let Ok(meta) = std::fs::metadata(&zip) else {
            eprintln!("{} is missing: run `make package` first", zip.display());
            std::process::exit(2);
        };
        let dir = scratch.path().join(&name);
        let bootstrap = extract(&zip, &dir);
        let env: Vec<(String, String)> = [
            ("HOME", home.to_string_lossy().as_ref()),
            ("AWS_LAMBDA_FUNCTION_NAME", name.as_str()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "bench"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("BAKEHOUSE_TABLE", "bakehouse"),
            (
                "BAKEHOUSE_STATE_MACHINE_ARN",
                "arn:aws:states:us-east-1:123456789012:stateMachine:bakehouse",
            ),
            ("BAKEHOUSE_WEBHOOK_SECRET_PARAMETER", SECRET_PARAMETER),
            (
                "BAKEHOUSE_SCHEDULER_ROLE_ARN",
                "arn:aws:iam::123456789012:role/bakehouse-scheduler",
            ),
            // the events function wakes these
            ("BAKEHOUSE_LAUNCH_FUNCTION", "bakehouse-launch"),
            ("BAKEHOUSE_PROVISION_FUNCTION", "bakehouse-provision"),
            ("BAKEHOUSE_CLEAN_FUNCTION", "bakehouse-clean"),
            ("BAKEHOUSE_CAPTURE_FUNCTION", "bakehouse-capture"),
            ("BAKEHOUSE_TEST_FUNCTION", "bakehouse-test"),
            ("RUST_LOG", "warn"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let (took, line) = time_to_first_request(&bootstrap, &env);
            assert!(
                line.starts_with("GET /2018-06-01/runtime/invocation/next "),
                "{name}: {line}"
            );
            times.push(took);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = times[RUNS / 2];
        let markers = harness_markers(&bootstrap);
        println!(
            "  {:<10} {:>10.2} {:>10.2} {:>10.2} {:>10.2}  {}",
            name,
            meta.len() as f64 / 1_048_576.0,
            ms(median),
            ms(times[0]),
            ms(times[RUNS - 1]),
            if markers.is_empty() {
                "none".to_string()
            } else {
                markers.join(", ")
            }
        );
        if !markers.is_empty() {
            with_harness.push(name.clone());
        }
        worst_zip = worst_zip.max(meta.len());
        worst_init = worst_init.max(median);
    }
    println!(
        "  largest zip {:.2} MiB (target < {} MiB: {}); slowest median init {:.2} ms (target < {} ms: {})",
        worst_zip as f64 / 1_048_576.0,
        MAX_ZIP / 1_048_576,
        if worst_zip < MAX_ZIP { "met" } else { "MISSED" },
        worst_init.as_secs_f64() * 1000.0,
        MAX_INIT.as_millis(),
        if worst_init < MAX_INIT { "met" } else { "MISSED" },
    );
    println!(
        "  test harness linked into: {}",
        if with_harness.is_empty() {
            "no package".to_string()
        } else {
            format!("{} (MISSED)", with_harness.join(", "))
        }
    );
}
