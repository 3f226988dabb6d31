//! Screening a webhook delivery, before anything is started: method, size,
//! the provider's signature, the event type, the payload and the ref. Pure:
//! no I/O, so every path can be tested (and fuzzed) directly.

use std::collections::BTreeSet;
use std::fmt;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::registry::{Trigger, TriggerKind};

/// Largest body accepted (1 MiB); larger deliveries get 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// GitHub's limit on the commits listed in a push payload.
const GITHUB_MAX_COMMITS: usize = 2048;

/// A commit id that stands for "no commit" (branch created or deleted).
fn is_null_commit(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// The git hosting service that sends the webhook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// GitHub (github.com or GitHub Enterprise Server).
    GitHub,
    /// GitLab (gitlab.com or self-managed).
    GitLab,
}

impl Provider {
    /// `github` or `gitlab`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
        }
    }

    /// The public API base URL of the hosted service.
    pub fn default_api_url(self) -> &'static str {
        match self {
            Provider::GitHub => "https://api.github.com",
            Provider::GitLab => "https://gitlab.com/api/v4",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Provider, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "github" => Ok(Provider::GitHub),
            "gitlab" => Ok(Provider::GitLab),
            other => Err(format!(
                "unknown git provider {other:?}: expected github or gitlab"
            )),
        }
    }
}

/// The webhook secret (GitHub HMAC key or GitLab token). Never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret; an empty one is refused (anyone could sign with it).
    pub fn new(value: impl Into<Vec<u8>>) -> Result<Secret, String> {
        let value = value.into();
        if value.is_empty() {
            return Err("the webhook secret is empty".to_string());
        }
        Ok(Secret(value))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the screening needs to know about the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScreenSettings {
    /// The provider whose signatures are accepted.
    pub provider: Provider,
    /// The branch whose pushes start builds (`main`).
    pub branch: String,
    /// Only pushes to this repository (`owner/name`, GitLab
    /// `group/project`) start builds; `None` accepts any repository that
    /// knows the secret.
    pub repository: Option<String>,
}

/// A push to the configured branch, signature checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    /// Who sent it.
    pub provider: Provider,
    /// `owner/name` (GitHub) or `group/project` (GitLab).
    pub repository: String,
    /// How the provider's API names the repository: `owner/name` for
    /// GitHub, the numeric project id for GitLab.
    pub api_project: String,
    /// The pushed ref (`refs/heads/main`).
    pub git_ref: String,
    /// The commit the branch was at before (all zeros for a new branch).
    pub before: String,
    /// The commit pushed.
    pub after: String,
    /// Who pushed, where known.
    pub actor: Option<String>,
    /// Files added by the listed commits.
    pub added: BTreeSet<String>,
    /// Files modified by the listed commits.
    pub modified: BTreeSet<String>,
    /// Files removed by the listed commits.
    pub removed: BTreeSet<String>,
    /// Whether the commit list covers the whole change (not a forced push,
    /// a new branch, or a list the provider cut short): when false every
    /// recipe counts as touched.
    pub complete: bool,
    /// The provider's delivery id, for logs.
    pub delivery: Option<String>,
}

impl PushEvent {
    /// Every file added, modified or removed.
    pub fn changed(&self) -> BTreeSet<String> {
        self.added
            .iter()
            .chain(&self.modified)
            .chain(&self.removed)
            .cloned()
            .collect()
    }

    /// The trigger recorded with the builds it starts.
    pub fn trigger(&self) -> Trigger {
        Trigger {
            kind: TriggerKind::Push,
            repository: Some(self.repository.clone()),
            git_ref: Some(self.git_ref.clone()),
            commit: Some(self.after.clone()),
            actor: self.actor.clone(),
        }
    }

    /// Whether there was a commit before the push.
    pub fn has_before(&self) -> bool {
        !self.before.is_empty() && !is_null_commit(&self.before)
    }
}

/// The outcome of screening an authentic delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screened {
    /// A push to the configured branch: work out what to build.
    Push(Box<PushEvent>),
    /// Authentic, but nothing to do (another event, branch or repository).
    Ignored(String),
}

/// Why a delivery was refused, with the HTTP status to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// 4xx status.
    pub status: u16,
    /// What was wrong (safe to show the sender).
    pub reason: String,
}

impl Rejection {
    fn new(status: u16, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
        }
    }

    fn unauthorized(reason: impl Into<String>) -> Rejection {
        Rejection::new(401, reason)
    }

    fn bad_request(reason: impl Into<String>) -> Rejection {
        Rejection::new(400, reason)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>` in
/// constant time.
pub fn verify_github_signature(
    secret: &Secret,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let Some(value) = headers.get("x-hub-signature-256") else {
        let reason = if headers.contains_key("x-hub-signature") {
            "only X-Hub-Signature-256 (HMAC-SHA256) signatures are accepted"
        } else {
            "missing X-Hub-Signature-256"
        };
        return Err(Rejection::unauthorized(reason));
    };
    let value = value
        .to_str()
        .map_err(|_| Rejection::unauthorized("malformed X-Hub-Signature-256"))?
        .trim();
    let digest = value
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|d| d.len() == 32)
        .ok_or_else(|| {
            Rejection::unauthorized(
                "malformed X-Hub-Signature-256: expected sha256=<64 hex digits>",
            )
        })?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.bytes())
        .map_err(|_| Rejection::unauthorized("webhook secret unusable"))?;
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(&digest)) {
        Ok(())
    } else {
        Err(Rejection::unauthorized(
            "X-Hub-Signature-256 does not match",
        ))
    }
}

/// Checks `X-Gitlab-Token` against the secret in constant time (digests
/// are compared, so not even the length leaks).
pub fn verify_gitlab_token(secret: &Secret, headers: &HeaderMap) -> Result<(), Rejection> {
    let token = headers
        .get("x-gitlab-token")
        .ok_or_else(|| Rejection::unauthorized("missing X-Gitlab-Token"))?;
    let given = Sha256::digest(token.as_bytes());
    let expected = Sha256::digest(secret.bytes());
    if bool::from(given.as_slice().ct_eq(expected.as_slice())) {
        Ok(())
    } else {
        Err(Rejection::unauthorized("X-Gitlab-Token does not match"))
    }
}

#[derive(Deserialize)]
struct Commit {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

#[derive(Deserialize)]
struct GitHubPush {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    forced: bool,
    repository: GitHubRepository,
    #[serde(default)]
    pusher: Option<GitHubPusher>,
    #[serde(default)]
    sender: Option<GitHubSender>,
    #[serde(default)]
    commits: Vec<Commit>,
}

#[derive(Deserialize)]
struct GitHubRepository {
    full_name: String,
}

#[derive(Deserialize)]
struct GitHubPusher {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct GitHubSender {
    #[serde(default)]
    login: Option<String>,
}

#[derive(Deserialize)]
struct GitLabPush {
    #[serde(default)]
    object_kind: Option<String>,
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    user_username: Option<String>,
    project_id: u64,
    project: GitLabProject,
    #[serde(default)]
    commits: Vec<Commit>,
    #[serde(default)]
    total_commits_count: Option<u64>,
}

#[derive(Deserialize)]
struct GitLabProject {
    path_with_namespace: String,
}

fn check_commit(field: &str, sha: &str) -> Result<(), Rejection> {
    let ok = (sha.len() == 40 || sha.len() == 64) && sha.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(Rejection::bad_request(format!(
            "{field}: {sha:?} is not a commit id"
        )))
    }
}

fn check_repository(name: &str) -> Result<(), Rejection> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && !name
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(Rejection::bad_request(format!(
            "{name:?} is not a repository name"
        )))
    }
}

fn collect(commits: &[Commit]) -> [BTreeSet<String>; 3] {
    let mut out: [BTreeSet<String>; 3] = Default::default();
    for c in commits {
        out[0].extend(c.added.iter().cloned());
        out[1].extend(c.modified.iter().cloned());
        out[2].extend(c.removed.iter().cloned());
    }
    out
}

/// The JSON document of a delivery: the body itself, or GitHub's
/// `payload` form field when sent as `application/x-www-form-urlencoded`.
fn json_document(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Rejection> {
    let form = header(headers, "content-type").is_some_and(|c| {
        c.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form {
        return Ok(body.to_vec());
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned().into_bytes())
        .ok_or_else(|| Rejection::bad_request("form-encoded delivery without a payload field"))
}

fn parse_github(headers: &HeaderMap, body: &[u8]) -> Result<Screened, Rejection> {
    let event = header(headers, "x-github-event")
        .ok_or_else(|| Rejection::bad_request("missing X-GitHub-Event"))?;
    match event {
        "push" => {}
        "ping" => {
            return Ok(Screened::Ignored(
                "ping received: the webhook is set up".into(),
            ))
        }
        other => {
            return Ok(Screened::Ignored(format!(
                "{other:?} events are ignored: only push events start builds"
            )))
        }
    }
    let doc = json_document(headers, body)?;
    let push: GitHubPush = serde_json::from_slice(&doc)
        .map_err(|e| Rejection::bad_request(format!("not a GitHub push payload: {e}")))?;
    if push.deleted || is_null_commit(&push.after) {
        return Ok(Screened::Ignored(format!(
            "{} was deleted: nothing to build",
            push.git_ref
        )));
    }
    check_commit("after", &push.after)?;
    if !is_null_commit(&push.before) {
        check_commit("before", &push.before)?;
    }
    check_repository(&push.repository.full_name)?;
    let [added, modified, removed] = collect(&push.commits);
    let complete = !push.forced && !push.created && push.commits.len() < GITHUB_MAX_COMMITS;
    Ok(Screened::Push(Box::new(PushEvent {
        provider: Provider::GitHub,
        repository: push.repository.full_name.clone(),
        api_project: push.repository.full_name,
        git_ref: push.git_ref,
        before: push.before,
        after: push.after.to_ascii_lowercase(),
        actor: push
            .sender
            .and_then(|s| s.login)
            .or_else(|| push.pusher.and_then(|p| p.name)),
        added,
        modified,
        removed,
        complete,
        delivery: header(headers, "x-github-delivery").map(str::to_string),
    })))
}

fn parse_gitlab(headers: &HeaderMap, body: &[u8]) -> Result<Screened, Rejection> {
    let event = header(headers, "x-gitlab-event")
        .ok_or_else(|| Rejection::bad_request("missing X-Gitlab-Event"))?;
    if event != "Push Hook" {
        return Ok(Screened::Ignored(format!(
            "{event:?} events are ignored: only push events start builds"
        )));
    }
    let push: GitLabPush = serde_json::from_slice(body)
        .map_err(|e| Rejection::bad_request(format!("not a GitLab push payload: {e}")))?;
    if push.object_kind.as_deref().is_some_and(|k| k != "push") {
        return Ok(Screened::Ignored(format!(
            "object_kind {:?} is ignored: only pushes start builds",
            push.object_kind.unwrap_or_default()
        )));
    }
    if is_null_commit(&push.after) {
        return Ok(Screened::Ignored(format!(
            "{} was deleted: nothing to build",
            push.git_ref
        )));
    }
    check_commit("after", &push.after)?;
    if !is_null_commit(&push.before) {
        check_commit("before", &push.before)?;
    }
    check_repository(&push.project.path_with_namespace)?;
    let [added, modified, removed] = collect(&push.commits);
    let listed = push.commits.len() as u64;
    let complete = !is_null_commit(&push.before)
        && push.total_commits_count.is_none_or(|total| listed >= total);
    Ok(Screened::Push(Box::new(PushEvent {
        provider: Provider::GitLab,
        repository: push.project.path_with_namespace,
        api_project: push.project_id.to_string(),
        git_ref: push.git_ref,
        before: push.before,
        after: push.after.to_ascii_lowercase(),
        actor: push.user_username,
        added,
        modified,
        removed,
        complete,
        delivery: header(headers, "x-gitlab-event-uuid").map(str::to_string),
    })))
}

/// Screens a delivery: `method` (when known) must be POST, the body at most
/// [`MAX_BODY_BYTES`], the provider's signature valid; then other events,
/// refs and repositories are ignored and a push is parsed.
pub fn screen(
    settings: &ScreenSettings,
    secret: &Secret,
    method: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Screened, Rejection> {
    if method.is_some_and(|m| !m.eq_ignore_ascii_case("POST")) {
        return Err(Rejection::new(405, "only POST is accepted"));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::new(
            413,
            format!(
                "body of {} bytes is over the {MAX_BODY_BYTES}-byte limit",
                body.len()
            ),
        ));
    }
    let screened = match settings.provider {
        Provider::GitHub => {
            verify_github_signature(secret, headers, body)?;
            parse_github(headers, body)?
        }
        Provider::GitLab => {
            verify_gitlab_token(secret, headers)?;
            parse_gitlab(headers, body)?
        }
    };
    let Screened::Push(push) = screened else {
        return Ok(screened);
    };
    let wanted = format!("refs/heads/{}", settings.branch);
    if push.git_ref != wanted {
        return Ok(Screened::Ignored(format!(
            "push to {} ignored: only {wanted} starts builds",
            push.git_ref
        )));
    }
    if let Some(repo) = &settings.repository {
        if !push.repository.eq_ignore_ascii_case(repo) {
            return Ok(Screened::Ignored(format!(
                "push to repository {} ignored: only {repo} starts builds",
                push.repository
            )));
        }
    }
    Ok(Screened::Push(push))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: Provider) -> ScreenSettings {
        ScreenSettings {
            provider,
            branch: "main".into(),
            repository: None,
        }
    }

    fn secret() -> Secret {
        Secret::new("s3cret").unwrap()
    }

    fn sign(body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn github_headers(event: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", event.parse().unwrap());
        h.insert("x-hub-signature-256", signature.parse().unwrap());
        h
    }

    const PUSH: &str = r#"{"ref":"refs/heads/main","before":"1111111111111111111111111111111111111111","after":"2222222222222222222222222222222222222222","repository":{"full_name":"o/r"},"sender":{"login":"octocat"},"commits":[{"added":["a"],"modified":["b"],"removed":["c"]},{"added":[],"modified":["a"],"removed":[]}]}"#;

    #[test]
    fn a_signed_push_is_parsed() {
        let h = github_headers("push", &sign(PUSH.as_bytes()));
        let Ok(Screened::Push(p)) = screen(
            &settings(Provider::GitHub),
            &secret(),
            Some("POST"),
            &h,
            PUSH.as_bytes(),
        ) else {
            panic!("not a push");
        };
        assert_eq!(p.repository, "o/r");
        assert_eq!(p.actor.as_deref(), Some("octocat"));
        assert_eq!(p.changed().into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(p.complete);
    }

    #[test]
    fn one_flipped_bit_is_refused() {
        let mut sig = sign(PUSH.as_bytes());
        let last = sig.pop().unwrap();
        sig.push(if last == '0' { '1' } else { '0' });
        let h = github_headers("push", &sig);
        let r = screen(
            &settings(Provider::GitHub),
            &secret(),
            None,
            &h,
            PUSH.as_bytes(),
        );
        assert_eq!(r.unwrap_err().status, 401);
    }

    #[test]
    fn form_encoded_payloads_are_read() {
        let body = format!(
            "payload={}",
            form_urlencoded::byte_serialize(PUSH.as_bytes()).collect::<String>()
        );
        let mut h = github_headers("push", &sign(body.as_bytes()));
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let r = screen(
            &settings(Provider::GitHub),
            &secret(),
            None,
            &h,
            body.as_bytes(),
        );
        assert!(matches!(r, Ok(Screened::Push(_))), "{r:?}");
    }

    #[test]
    fn wrong_method_is_405() {
        let h = github_headers("push", &sign(PUSH.as_bytes()));
        let r = screen(
            &settings(Provider::GitHub),
            &secret(),
            Some("GET"),
            &h,
            PUSH.as_bytes(),
        );
        assert_eq!(r.unwrap_err().status, 405);
    }

    #[test]
    fn empty_secret_is_refused() {
        assert!(Secret::new("").is_err());
        assert_eq!(format!("{:?}", secret()), "Secret(<redacted>)");
    }

    #[test]
    fn gitlab_token_must_match() {
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-event", "Push Hook".parse().unwrap());
        h.insert("x-gitlab-token", "s3cret!".parse().unwrap());
        let r = screen(&settings(Provider::GitLab), &secret(), None, &h, b"{}");
        assert_eq!(r.unwrap_err().status, 401);
    }
}
