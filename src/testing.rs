//! Support for tests and benchmarks: a real `moto_server` process on a free
//! 127.0.0.1 port, shared by the tests of one process and reset between them.
//!
//! The server is moto from `.venv` (installed by `make setup`; another
//! Python with moto can be named by `MOTO_PYTHON`), run by
//! `scripts/moto_server.py`, which serialises request handling so that
//! moto's transactions are as isolated as DynamoDB's. It stops when the
//! process that started it exits (it is wrapped in a shell that kills it
//! when its standard input closes).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

/// Errors starting or talking to the moto server.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    /// The executable is not where it should be.
    #[error("no Python with moto at {0}: run `make setup` (creates .venv with moto[server]) or set MOTO_PYTHON")]
    NotInstalled(PathBuf),
    /// Starting or reaching the server failed.
    #[error("moto server: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer in time.
    #[error("moto server on port {0} did not become ready")]
    NotReady(u16),
    /// An admin request got an unexpected answer.
    #[error("moto admin request {path} answered: {status_line}")]
    Admin {
        /// Request path.
        path: String,
        /// First line of the answer.
        status_line: String,
    },
}

/// A running moto server.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    _child: Child,
}

impl MotoServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Result<MotoServer, MotoError> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("MOTO_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv/bin/python"));
        if !python.exists() {
            return Err(MotoError::NotInstalled(python));
        }
        let script = root.join("scripts/moto_server.py");
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" "$1" "$2" >/dev/null 2>&1 & p=$!; trap 'kill $p 2>/dev/null' EXIT; read _closed; exit 0"#)
            .arg(&python)
            .arg(&script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let server = MotoServer {
            port,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if server.request("GET", "/moto-api/data.json", "").is_ok() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(MotoError::NotReady(port))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Clears all state (`POST /moto-api/reset`).
    pub fn reset(&self) -> Result<(), MotoError> {
        self.request("POST", "/moto-api/reset", "").map(drop)
    }

    /// Sends an admin request (e.g. `POST /moto-api/config`) and returns the body.
    pub fn request(&self, method: &str, path: &str, body: &str) -> Result<String, MotoError> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let status_line = answer.lines().next().unwrap_or_default().to_string();
        if !status_line.contains(" 200") {
            return Err(MotoError::Admin {
                path: path.to_string(),
                status_line,
            });
        }
        Ok(answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    }
}

static SHARED: OnceLock<Result<MotoServer, String>> = OnceLock::new();
static EXCLUSIVE: Mutex<()> = Mutex::const_new(());

/// Exclusive use of the process-wide moto server, freshly reset; tests that
/// share the server hold this for their whole run.
pub struct MotoGuard {
    server: &'static MotoServer,
    _lock: MutexGuard<'static, ()>,
}

impl MotoGuard {
    /// The server.
    pub fn server(&self) -> &MotoServer {
        self.server
    }

    /// SDK configuration pointing at the server in `region`.
    pub async fn sdk_config(&self, region: &str) -> aws_config::SdkConfig {
        crate::aws::for_endpoint(&self.server.endpoint(), region).await
    }

    /// The standard AWS environment for a child process (the CLI under test)
    /// that talks to the server in `region` with test credentials.
    pub fn process_env(&self, region: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.server.endpoint()),
            ("AWS_REGION", region.to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }
}

/// Waits for exclusive use of the shared server (starting it on first use)
/// and resets it.
pub async fn moto() -> Result<MotoGuard, MotoError> {
    let lock = EXCLUSIVE.lock().await;
    let server = SHARED
        .get_or_init(|| MotoServer::start().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| MotoError::Io(std::io::Error::other(e.clone())))?;
    server.reset()?;
    Ok(MotoGuard {
        server,
        _lock: lock,
    })
}
