//! A small HTTP server (std TcpListener, one thread) that serves a fixture
//! repository through the GitHub and GitLab API shapes the webhook reads:
//!
//! - `GET /github/repos/{owner}/{repo}/git/trees/{sha}?recursive=1`
//! - `GET /github/repos/{owner}/{repo}/contents/{path}?ref={sha}` (a link
//!   is answered with the content of its target, as GitHub does)
//! - `GET /github/repos/{owner}/{repo}/git/blobs/{sha}` (the tree's blob
//!   ids here are the hex of `<commit dir>/<path>`)
//! - `GET /gitlab/projects/{id}/repository/tree?ref=&path=&recursive=true&page=`
//!   (3 entries a page, with `X-Next-Page`, to exercise pagination)
//! - `GET /gitlab/projects/{id}/repository/files/{path}?ref={sha}`
//!
//! - `GET /github/repos/{owner}/{repo}/branches/main` and
//!   `GET /gitlab/projects/{id}/repository/branches/main`: the head set by
//!   [`GitServer::set_head`] (C2 at first)
//!
//! Commits map to directories of `tests/fixtures/webhook/repo`. A token, when
//! set, must be sent (`Authorization: Bearer` or `PRIVATE-TOKEN`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

/// Commit ids of the fixture repository's three states.
pub const C1: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
pub const C2: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d47ac4fd39";
pub const C3: &str = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e";

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub status: u16,
}

pub struct GitServer {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    head: Arc<Mutex<String>>,
}

impl GitServer {
    /// Serves the fixture repository; `token` is required when given.
    pub fn start(token: Option<&str>) -> GitServer {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhook/repo");
        let commits: BTreeMap<String, PathBuf> = [(C1, "v1"), (C2, "v2"), (C3, "v3")]
            .into_iter()
            .map(|(c, d)| (c.to_string(), root.join(d)))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let head = Arc::new(Mutex::new(C2.to_string()));
        let state = Arc::new(State {
            root: root.clone(),
            commits,
            token: token.map(str::to_string),
            seen: seen.clone(),
            head: head.clone(),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || state.serve(stream));
            }
        });
        GitServer { base, seen, head }
    }

    /// Moves `main` to `commit`.
    pub fn set_head(&self, commit: &str) {
        *self.head.lock().expect("lock") = commit.to_string();
    }

    pub fn github_url(&self) -> String {
        format!("{}/github", self.base)
    }

    pub fn gitlab_url(&self) -> String {
        format!("{}/gitlab", self.base)
    }

    /// Requests answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

struct State {
    root: PathBuf,
    commits: BTreeMap<String, PathBuf>,
    token: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
    head: Arc<Mutex<String>>,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// Every entry below `dir` as (repo path, type, mode), sorted.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, &'static str, &'static str)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path
            .strip_prefix(root)
            .expect("prefix")
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        if meta.file_type().is_symlink() {
            out.push((rel, "blob", "120000"));
        } else if meta.is_dir() {
            out.push((rel, "tree", "040000"));
            walk(root, &path, out);
        } else if meta.permissions().mode() & 0o111 != 0 {
            out.push((rel, "blob", "100755"));
        } else {
            out.push((rel, "blob", "100644"));
        }
    }
}

fn wrapped_base64(bytes: &[u8]) -> String {
    let b = BASE64.encode(bytes);
    let mut out = String::new();
    for chunk in b.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        out.push('\n');
    }
    out
}

impl State {
    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let (status, extra, body) = self.route(&target, &headers);
        self.seen.lock().expect("lock").push(Seen {
            path: target,
            status,
        });
        let mut stream = stream;
        let text = body.to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{text}",
            text.len()
        );
        let _ = stream.flush();
    }

    fn route(&self, target: &str, headers: &BTreeMap<String, String>) -> (u16, String, Value) {
        let not_found = (404, String::new(), json!({"message": "Not Found"}));
        let (path, q) = target.split_once('?').unwrap_or((target, ""));
        let q = query(q);
        if let Some(rest) = path.strip_prefix("/github/repos/") {
            if let Some(token) = &self.token {
                if headers.get("authorization") != Some(&format!("Bearer {token}")) {
                    return (401, String::new(), json!({"message": "Bad credentials"}));
                }
            }
            let parts: Vec<&str> = rest.splitn(4, '/').collect();
            if parts.len() < 4 || parts[0] != "octo-org" || parts[1] != "golden-images" {
                return not_found;
            }
            match parts[2] {
                "branches" if parts[3] == "main" => {
                    let head = self.head.lock().expect("lock").clone();
                    (
                        200,
                        String::new(),
                        json!({"name": "main", "commit": {"sha": head, "url": "https://api.github.com/x"}, "protected": true}),
                    )
                }
                "git" if parts[3].starts_with("blobs/") => {
                    let id = parts[3].trim_start_matches("blobs/");
                    let Some(rel) = hex::decode(id).ok().and_then(|b| String::from_utf8(b).ok())
                    else {
                        return not_found;
                    };
                    let full = self.root.join(rel);
                    let bytes = match std::fs::read_link(&full) {
                        Ok(target) => target.to_string_lossy().into_owned().into_bytes(),
                        Err(_) => match std::fs::read(&full) {
                            Ok(b) => b,
                            Err(_) => return not_found,
                        },
                    };
                    (
                        200,
                        String::new(),
                        json!({"sha": id, "size": bytes.len(), "encoding": "base64", "content": wrapped_base64(&bytes)}),
                    )
                }
                "git" => {
                    let Some(sha) = parts[3].strip_prefix("trees/") else {
                        return not_found;
                    };
                    let Some(dir) = self.commits.get(sha) else {
                        return not_found;
                    };
                    let mut entries = Vec::new();
                    walk(dir, dir, &mut entries);
                    let tree: Vec<Value> = entries
                        .into_iter()
                        .map(|(p, t, m)| {
                            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                            let id = hex::encode(format!("{name}/{p}"));
                            json!({"path": p, "mode": m, "type": t, "sha": id, "url": "https://api.github.com/x"})
                        })
                        .collect();
                    (
                        200,
                        String::new(),
                        json!({"sha": sha, "url": "https://api.github.com/x", "tree": tree, "truncated": false}),
                    )
                }
                "contents" => {
                    let file = decode(parts[3]);
                    let Some(dir) = q.get("ref").and_then(|r| self.commits.get(r)) else {
                        return not_found;
                    };
                    let full = dir.join(&file);
                    if full.is_dir() {
                        return (200, String::new(), json!([{"type": "dir", "path": file}]));
                    }
                    match std::fs::read(&full) {
                        Ok(bytes) => (
                            200,
                            String::new(),
                            json!({
                                "type": "file", "encoding": "base64", "size": bytes.len(),
                                "name": full.file_name().map(|n| n.to_string_lossy().into_owned()),
                                "path": file, "content": wrapped_base64(&bytes),
                                "sha": "0000000000000000000000000000000000000000",
                                "url": "https://api.github.com/x", "git_url": null, "html_url": null, "download_url": null,
                                "_links": {}
                            }),
                        ),
                        Err(_) => not_found,
                    }
                }
                _ => not_found,
            }
        } else if let Some(rest) = path.strip_prefix("/gitlab/projects/15/repository/") {
            if let Some(token) = &self.token {
                if headers.get("private-token") != Some(token) {
                    return (401, String::new(), json!({"message": "401 Unauthorized"}));
                }
            }
            if rest == "branches/main" {
                let head = self.head.lock().expect("lock").clone();
                return (
                    200,
                    String::new(),
                    json!({"name": "main", "merged": false, "protected": true, "default": true, "commit": {"id": head, "short_id": &head[..8], "title": "x"}}),
                );
            }
            let Some(dir) = q.get("ref").and_then(|r| self.commits.get(r)) else {
                return not_found;
            };
            if rest == "tree" {
                let sub = q.get("path").cloned().unwrap_or_default();
                let start = if sub.is_empty() {
                    dir.clone()
                } else {
                    dir.join(&sub)
                };
                if !start.is_dir() {
                    return (404, String::new(), json!({"message": "404 Tree Not Found"}));
                }
                let mut entries = Vec::new();
                walk(dir, &start, &mut entries);
                let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                let per = 3;
                let chunk: Vec<Value> = entries
                    .iter()
                    .skip((page - 1) * per)
                    .take(per)
                    .map(|(p, t, m)| {
                        let name = p.rsplit('/').next().unwrap_or(p);
                        json!({"id": "a1e8f8d745cc87e3a9248358d9352bb7f9a0aeba", "name": name, "type": t, "path": p, "mode": m})
                    })
                    .collect();
                let next = if page * per < entries.len() {
                    (page + 1).to_string()
                } else {
                    String::new()
                };
                (
                    200,
                    format!("X-Next-Page: {next}\r\nX-Page: {page}\r\n"),
                    Value::Array(chunk),
                )
            } else if let Some(file) = rest.strip_prefix("files/") {
                let file = decode(file);
                let full = dir.join(&file);
                // GitLab answers a link with its blob: the target path.
                let content = match std::fs::read_link(&full) {
                    Ok(target) => Ok(target.to_string_lossy().into_owned().into_bytes()),
                    Err(_) => std::fs::read(&full),
                };
                match content {
                    Ok(bytes) if full.exists() && !full.is_dir() => (
                        200,
                        String::new(),
                        json!({
                            "file_name": full.file_name().map(|n| n.to_string_lossy().into_owned()),
                            "file_path": file, "size": bytes.len(), "encoding": "base64",
                            "content_sha256": "4c294617b60715c1d218e61164a3abd4808a4284cbc30e6728a01ad9aada4481",
                            "ref": q.get("ref"), "blob_id": "79f7bbd25901e8334750839545a9bd021f0e4c83",
                            "commit_id": q.get("ref"), "last_commit_id": q.get("ref"),
                            "execute_filemode": std::fs::metadata(&full).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false),
                            "content": BASE64.encode(&bytes)
                        }),
                    ),
                    _ => (404, String::new(), json!({"message": "404 File Not Found"})),
                }
            } else {
                not_found
            }
        } else {
            not_found
        }
    }
}
