//! Reading a repository at a commit through the provider's HTTP API:
//! GitHub (`git/trees` for the listing with file modes, `contents` for
//! files) and GitLab (`repository/tree` and `repository/files`). The base
//! URL is configurable (GitHub Enterprise, self-managed GitLab, tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::request::Provider;

/// Characters left as they are in a URL path segment or query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Largest API response read.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How long one API request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Most GitLab tree pages followed.
const MAX_PAGES: u32 = 200;

/// Errors reading the repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The request could not be made or answered.
    #[error("{url}: {message}")]
    Http {
        /// What was requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The API answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// What was requested.
        url: String,
        /// The status.
        status: u16,
        /// The start of the answer.
        body: String,
    },
    /// The answer was not what the API documents.
    #[error("{url}: unexpected answer: {message}")]
    Decode {
        /// What was requested.
        url: String,
        /// What did not fit.
        message: String,
    },
    /// The provider cut the listing short.
    #[error("the tree of {0} is too large to list in one request")]
    Truncated(String),
    /// A path is not a plain file (a directory or a submodule).
    #[error("{0} is not a file")]
    NotAFile(String),
    /// The TLS setup failed (no root certificates).
    #[error("TLS: {0}")]
    Tls(String),
}

/// What a tree entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Mode 100755.
        executable: bool,
    },
    /// A symbolic link (its content is the target).
    Link,
    /// A directory.
    Dir,
    /// A submodule or anything else that has no content here.
    Other,
}

/// One entry of a repository tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Path from the repository root, `/` separated.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// The git object id, where the provider gives it.
    pub id: Option<String>,
}

fn kind_of(kind: &str, mode: &str) -> EntryKind {
    match (kind, mode) {
        ("blob", "120000") => EntryKind::Link,
        ("blob", m) => EntryKind::File {
            executable: m == "100755",
        },
        ("tree", _) => EntryKind::Dir,
        _ => EntryKind::Other,
    }
}

/// A repository at any commit.
#[async_trait]
pub trait Repository: Send + Sync {
    /// Every entry below `dir` (`""` for the whole repository), recursively,
    /// at `commit`; empty when `dir` does not exist.
    async fn tree(&self, commit: &str, dir: &str) -> Result<Vec<TreeEntry>, RepoError>;
    /// The content of the file at `path` (for a link: its target) at
    /// `commit`, or `None` when there is no such file.
    async fn read(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, RepoError>;
    /// The commit `branch` points at now, or `None` when there is no such
    /// branch.
    async fn branch_head(&self, branch: &str) -> Result<Option<String>, RepoError>;
    /// The target of the symbolic link `entry` (listed at `commit`).
    async fn read_link(&self, commit: &str, entry: &TreeEntry) -> Result<String, RepoError> {
        let bytes = self
            .read(commit, &entry.path)
            .await?
            .ok_or_else(|| RepoError::NotAFile(entry.path.clone()))?;
        String::from_utf8(bytes).map_err(|_| RepoError::NotAFile(entry.path.clone()))
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTP client for one provider's API: base URL, token, TLS with the
/// system's root certificates. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    client: HttpsClient,
    provider: Provider,
    base: String,
    token: Option<HeaderValue>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("provider", &self.provider)
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ApiClient {
    /// A client for `provider`'s API at `base_url`, authenticating with
    /// `token` when given (GitHub: `Authorization: Bearer`, GitLab:
    /// `PRIVATE-TOKEN`).
    pub fn new(
        provider: Provider,
        base_url: &str,
        token: Option<&str>,
    ) -> Result<ApiClient, RepoError> {
        let crypto = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(crypto)
            .map_err(|e| RepoError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        let token = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                let text = match provider {
                    Provider::GitHub => format!("Bearer {t}"),
                    Provider::GitLab => t.to_string(),
                };
                let mut value = HeaderValue::from_str(&text).map_err(|_| {
                    RepoError::Tls("the API token is not a valid header value".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(ApiClient {
            client,
            provider,
            base: base_url.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// The repository `project` (GitHub `owner/name`, GitLab project id).
    pub fn repository(&self, project: &str) -> Arc<dyn Repository> {
        match self.provider {
            Provider::GitHub => Arc::new(GitHubRepository {
                api: self.clone(),
                project: project.to_string(),
                trees: Mutex::new(HashMap::new()),
            }),
            Provider::GitLab => Arc::new(GitLabRepository {
                api: self.clone(),
                project: project.to_string(),
            }),
        }
    }

    /// GETs `path_and_query` below the base URL; returns status, headers
    /// and body.
    async fn get(&self, path_and_query: &str) -> Result<(StatusCode, HeaderMap, Bytes), RepoError> {
        let url = format!("{}{path_and_query}", self.base);
        let http_err = |message: String| RepoError::Http {
            url: url.clone(),
            message,
        };
        let accept = match self.provider {
            Provider::GitHub => "application/vnd.github+json",
            Provider::GitLab => "application/json",
        };
        let mut request = Request::get(&url)
            .header(USER_AGENT, "bakehouse-webhook")
            .header(ACCEPT, accept);
        if let Some(token) = &self.token {
            let name = match self.provider {
                Provider::GitHub => AUTHORIZATION,
                Provider::GitLab => HeaderName::from_static("private-token"),
            };
            request = request.header(name, token.clone());
        }
        if self.provider == Provider::GitHub {
            request = request.header("x-github-api-version", "2022-11-28");
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| http_err(e.to_string()))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| http_err(format!("no answer within {REQUEST_TIMEOUT:?}")))?
            .map_err(|e| http_err(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(
            REQUEST_TIMEOUT,
            Limited::new(body, MAX_RESPONSE_BYTES).collect(),
        )
        .await
        .map_err(|_| http_err(format!("answer not read within {REQUEST_TIMEOUT:?}")))?
        .map_err(|e| http_err(e.to_string()))?
        .to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// GETs and decodes JSON; `None` on 404.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: &str,
    ) -> Result<Option<(T, HeaderMap)>, RepoError> {
        let (status, headers, body) = self.get(path_and_query).await?;
        let url = format!("{}{path_and_query}", self.base);
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(RepoError::Status {
                url,
                status: status.as_u16(),
                body: text.chars().take(300).collect(),
            });
        }
        serde_json::from_slice(&body)
            .map(|v| Some((v, headers)))
            .map_err(|e| RepoError::Decode {
                url,
                message: e.to_string(),
            })
    }
}

fn encode(component: &str) -> String {
    utf8_percent_encode(component, COMPONENT).to_string()
}

/// A path with each segment encoded and the slashes kept.
fn encode_path(path: &str) -> String {
    path.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn decode_base64(url: &str, content: &str) -> Result<Vec<u8>, RepoError> {
    let compact: String = content.chars().filter(|c| !c.is_whitespace()).collect();
    BASE64.decode(compact).map_err(|e| RepoError::Decode {
        url: url.to_string(),
        message: format!("content is not base64: {e}"),
    })
}

fn under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// GitHub: `GET /repos/{owner}/{repo}/git/trees/{sha}?recursive=1` (cached
/// per commit) and `GET /repos/{owner}/{repo}/contents/{path}?ref={sha}`.
struct GitHubRepository {
    api: ApiClient,
    project: String,
    trees: Mutex<HashMap<String, Arc<Vec<TreeEntry>>>>,
}

#[derive(Deserialize)]
struct GitHubTree {
    #[serde(default)]
    tree: Vec<GitHubTreeEntry>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct GitHubTreeEntry {
    path: String,
    #[serde(default)]
    mode: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sha: Option<String>,
}

#[derive(Deserialize)]
struct GitHubBlob {
    content: String,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
struct GitHubBranch {
    commit: GitHubCommitRef,
}

#[derive(Deserialize)]
struct GitHubCommitRef {
    sha: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum GitHubContents {
    Item(GitHubContent),
    Listing(Vec<serde_json::Value>),
}

#[derive(Deserialize)]
struct GitHubContent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    target: Option<String>,
}

impl GitHubRepository {
    fn cached(&self, commit: &str) -> Option<Arc<Vec<TreeEntry>>> {
        self.trees.lock().ok().and_then(|t| t.get(commit).cloned())
    }

    async fn whole_tree(&self, commit: &str) -> Result<Arc<Vec<TreeEntry>>, RepoError> {
        if let Some(tree) = self.cached(commit) {
            return Ok(tree);
        }
        let path = format!(
            "/repos/{}/git/trees/{}?recursive=1",
            encode_path(&self.project),
            encode(commit)
        );
        let tree: GitHubTree = match self.api.get_json(&path).await? {
            Some((tree, _)) => tree,
            None => GitHubTree {
                tree: Vec::new(),
                truncated: false,
            },
        };
        if tree.truncated {
            return Err(RepoError::Truncated(format!("{}@{commit}", self.project)));
        }
        let entries = Arc::new(
            tree.tree
                .into_iter()
                .map(|e| TreeEntry {
                    kind: kind_of(&e.kind, &e.mode),
                    path: e.path,
                    id: e.sha,
                })
                .collect::<Vec<_>>(),
        );
        if let Ok(mut trees) = self.trees.lock() {
            trees.insert(commit.to_string(), entries.clone());
        }
        Ok(entries)
    }
}

#[async_trait]
impl Repository for GitHubRepository {
    async fn tree(&self, commit: &str, dir: &str) -> Result<Vec<TreeEntry>, RepoError> {
        let dir = dir.trim_matches('/');
        Ok(self
            .whole_tree(commit)
            .await?
            .iter()
            .filter(|e| under(&e.path, dir))
            .cloned()
            .collect())
    }

    async fn read(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let query = format!(
            "/repos/{}/contents/{}?ref={}",
            encode_path(&self.project),
            encode_path(path),
            encode(commit)
        );
        let url = format!("{}{query}", self.api.base);
        let Some((contents, _)) = self.api.get_json::<GitHubContents>(&query).await? else {
            return Ok(None);
        };
        let item = match contents {
            GitHubContents::Item(item) => item,
            GitHubContents::Listing(entries) => {
                return Err(RepoError::NotAFile(format!(
                    "{path} (a directory of {} entries)",
                    entries.len()
                )))
            }
        };
        match item.kind.as_str() {
            "file" => match (item.encoding.as_deref(), item.content.as_deref()) {
                (Some("base64"), Some(content)) => decode_base64(&url, content).map(Some),
                (encoding, _) => Err(RepoError::Decode {
                    url,
                    message: format!(
                        "file content not included (encoding {encoding:?}): files over 1 MB are not read through the contents API"
                    ),
                }),
            },
            "symlink" => item
                .target
                .map(|t| Some(t.into_bytes()))
                .ok_or_else(|| RepoError::Decode {
                    url,
                    message: "symlink without a target".into(),
                }),
            _ => Err(RepoError::NotAFile(path.to_string())),
        }
    }

    async fn branch_head(&self, branch: &str) -> Result<Option<String>, RepoError> {
        let query = format!(
            "/repos/{}/branches/{}",
            encode_path(&self.project),
            encode(branch)
        );
        Ok(self
            .api
            .get_json::<GitHubBranch>(&query)
            .await?
            .map(|(b, _)| b.commit.sha.to_ascii_lowercase()))
    }

    /// Through the blob (`GET /repos/{owner}/{repo}/git/blobs/{sha}`): the
    /// contents API answers a link with the content of what it points to.
    async fn read_link(&self, _commit: &str, entry: &TreeEntry) -> Result<String, RepoError> {
        let sha = entry
            .id
            .as_deref()
            .ok_or_else(|| RepoError::NotAFile(entry.path.clone()))?;
        let query = format!(
            "/repos/{}/git/blobs/{}",
            encode_path(&self.project),
            encode(sha)
        );
        let url = format!("{}{query}", self.api.base);
        let (blob, _) = self
            .api
            .get_json::<GitHubBlob>(&query)
            .await?
            .ok_or_else(|| RepoError::NotAFile(entry.path.clone()))?;
        let bytes = match blob.encoding.as_deref() {
            Some("base64") | None => decode_base64(&url, &blob.content)?,
            _ => blob.content.into_bytes(),
        };
        String::from_utf8(bytes).map_err(|_| RepoError::NotAFile(entry.path.clone()))
    }
}

/// GitLab: `GET /projects/{id}/repository/tree?ref=&path=&recursive=true`
/// (paginated) and `GET /projects/{id}/repository/files/{path}?ref=`.
struct GitLabRepository {
    api: ApiClient,
    project: String,
}

#[derive(Deserialize)]
struct GitLabTreeEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct GitLabBranch {
    commit: GitLabCommitRef,
}

#[derive(Deserialize)]
struct GitLabCommitRef {
    id: String,
}

#[derive(Deserialize)]
struct GitLabFile {
    #[serde(default)]
    encoding: Option<String>,
    content: String,
}

#[async_trait]
impl Repository for GitLabRepository {
    async fn tree(&self, commit: &str, dir: &str) -> Result<Vec<TreeEntry>, RepoError> {
        let dir = dir.trim_matches('/');
        let mut out = Vec::new();
        let mut page = 1u32;
        loop {
            let mut query = format!(
                "/projects/{}/repository/tree?ref={}&recursive=true&per_page=100&page={page}",
                encode(&self.project),
                encode(commit)
            );
            if !dir.is_empty() {
                query.push_str(&format!("&path={}", encode(dir)));
            }
            let Some((entries, headers)) =
                self.api.get_json::<Vec<GitLabTreeEntry>>(&query).await?
            else {
                return Ok(out);
            };
            out.extend(entries.into_iter().map(|e| TreeEntry {
                kind: kind_of(&e.kind, &e.mode),
                path: e.path,
                id: e.id,
            }));
            let next = headers
                .get("x-next-page")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u32>().ok());
            match next {
                Some(n) if n > page && n <= MAX_PAGES => page = n,
                Some(n) if n > MAX_PAGES => {
                    return Err(RepoError::Truncated(format!(
                        "{}/{dir}@{commit}",
                        self.project
                    )))
                }
                _ => return Ok(out),
            }
        }
    }

    async fn read(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        let query = format!(
            "/projects/{}/repository/files/{}?ref={}",
            encode(&self.project),
            encode(path),
            encode(commit)
        );
        let url = format!("{}{query}", self.api.base);
        let Some((file, _)) = self.api.get_json::<GitLabFile>(&query).await? else {
            return Ok(None);
        };
        match file.encoding.as_deref() {
            Some("base64") | None => decode_base64(&url, &file.content).map(Some),
            Some("text") => Ok(Some(file.content.into_bytes())),
            Some(other) => Err(RepoError::Decode {
                url,
                message: format!("unknown encoding {other:?}"),
            }),
        }
    }

    async fn branch_head(&self, branch: &str) -> Result<Option<String>, RepoError> {
        let query = format!(
            "/projects/{}/repository/branches/{}",
            encode(&self.project),
            encode(branch)
        );
        Ok(self
            .api
            .get_json::<GitLabBranch>(&query)
            .await?
            .map(|(b, _)| b.commit.id.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("recipes/a b/c.yaml"), "recipes/a%20b/c.yaml");
        assert_eq!(encode("recipes/a.yaml"), "recipes%2Fa.yaml");
    }

    #[test]
    fn modes_map_to_kinds() {
        assert_eq!(
            kind_of("blob", "100755"),
            EntryKind::File { executable: true }
        );
        assert_eq!(
            kind_of("blob", "100644"),
            EntryKind::File { executable: false }
        );
        assert_eq!(kind_of("blob", "120000"), EntryKind::Link);
        assert_eq!(kind_of("tree", "040000"), EntryKind::Dir);
        assert_eq!(kind_of("commit", "160000"), EntryKind::Other);
    }

    #[test]
    fn under_matches_whole_segments() {
        assert!(under("recipes/a.yaml", "recipes"));
        assert!(!under("recipes2/a.yaml", "recipes"));
        assert!(under("anything", ""));
    }
}
