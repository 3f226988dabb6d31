//! Read-only views of an image's files for the clean check: a root tree on
//! disk ([`DirView`]) or a captured `.tar.zst` artifact ([`TarView`],
//! indexed in one pass without unpacking). Paths are absolute image paths;
//! links are followed only by [`resolve`], and only inside the image.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

/// What is at a path (a final link not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file of this size.
    File(u64),
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Link(String),
    /// A device, FIFO or socket.
    Other,
}

/// Read access to an image's files.
pub trait ImageView {
    /// The entry at `path` (absolute, normalised), not following a final link.
    fn entry(&self, path: &str) -> Option<Entry>;
    /// Names in the directory `path` (sorted), empty when it is none.
    fn list(&self, path: &str) -> Vec<String>;
    /// The content of the regular file `path`, for the few small files the
    /// check reads (`/etc/shadow`, `/etc/passwd`, `/etc/fstab`).
    fn read(&self, path: &str) -> Option<Vec<u8>>;
}

/// `parent` joined with `name`, normalised (`..` stops at `/`).
pub fn join(parent: &str, name: &str) -> String {
    let mut parts: Vec<String> = if name.starts_with('/') {
        Vec::new()
    } else {
        parent
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other.to_string()),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `path` with every link on the way followed inside the image (at most
/// 40); `None` when something on the way is missing or links loop.
pub fn resolve(view: &dyn ImageView, path: &str) -> Option<String> {
    let mut pending: Vec<String> = join("/", path)
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut current = "/".to_string();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        let next = join(&current, &name);
        match view.entry(&next)? {
            Entry::Link(target) => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                if target.starts_with('/') {
                    current = "/".to_string();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|p| !p.is_empty())
                        .rev()
                        .map(str::to_string),
                );
            }
            _ => current = next,
        }
    }
    Some(current)
}

/// A root tree on this machine. Links are never followed on the host.
pub struct DirView {
    root: PathBuf,
}

impl DirView {
    /// A view of the tree at `root`.
    pub fn new(root: &Path) -> DirView {
        DirView {
            root: root.to_path_buf(),
        }
    }

    fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Whether every directory above `path` is a real directory (so the
    /// host path does not leave the tree through a link).
    fn parents_real(&self, path: &str) -> bool {
        let mut at = self.root.clone();
        let rel = Path::new(path.trim_start_matches('/'));
        let mut components: Vec<Component> = rel.components().collect();
        components.pop();
        for c in components {
            at.push(c);
            if !fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                return false;
            }
        }
        true
    }
}

impl ImageView for DirView {
    fn entry(&self, path: &str) -> Option<Entry> {
        if !self.parents_real(path) {
            return None;
        }
        let host = self.host(path);
        let meta = fs::symlink_metadata(&host).ok()?;
        let kind = meta.file_type();
        Some(if kind.is_symlink() {
            Entry::Link(fs::read_link(&host).ok()?.to_string_lossy().into_owned())
        } else if kind.is_dir() {
            Entry::Dir
        } else if kind.is_file() {
            Entry::File(meta.len())
        } else {
            Entry::Other
        })
    }

    fn list(&self, path: &str) -> Vec<String> {
        if self.entry(path) != Some(Entry::Dir) {
            return Vec::new();
        }
        let mut names: Vec<String> = fs::read_dir(self.host(path))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        match self.entry(path)? {
            Entry::File(_) => fs::read(self.host(path)).ok(),
            _ => None,
        }
    }
}

/// Files whose content the index keeps (the check reads them).
const KEPT: [&str; 3] = ["/etc/shadow", "/etc/passwd", "/etc/fstab"];
/// The most of a kept file that is read.
const KEPT_MAX: u64 = 16 << 20;

/// A captured `.tar.zst` (or plain `.tar`), indexed in one pass.
#[derive(Debug, Default)]
pub struct TarView {
    entries: BTreeMap<String, Entry>,
    children: BTreeMap<String, Vec<String>>,
    contents: BTreeMap<String, Vec<u8>>,
}

impl TarView {
    /// Reads the archive at `path` (zstd-compressed when it ends in `.zst`).
    pub fn open(path: &Path) -> io::Result<TarView> {
        let file = fs::File::open(path)?;
        if path.extension().is_some_and(|e| e == "zst") {
            TarView::from_reader(zstd::Decoder::new(file)?)
        } else {
            TarView::from_reader(file)
        }
    }

    /// Indexes a tar stream.
    pub fn from_reader<R: Read>(reader: R) -> io::Result<TarView> {
        let mut view = TarView::default();
        view.entries.insert("/".into(), Entry::Dir);
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.to_string_lossy().into_owned();
            let path = join("/", &raw);
            if path == "/" {
                continue;
            }
            let header = entry.header();
            let kind = header.entry_type();
            let item = if kind.is_dir() {
                Entry::Dir
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Entry::Link(target)
            } else if kind.is_hard_link() {
                // The same inode as an entry earlier in the archive: its
                // size and kept content are the target's.
                let target = entry
                    .link_name()?
                    .map(|t| join("/", &t.to_string_lossy()))
                    .unwrap_or_default();
                if let Some(content) = view.contents.get(&target).cloned() {
                    if KEPT.contains(&path.as_str()) {
                        view.contents.insert(path.clone(), content);
                    }
                }
                view.entries.get(&target).cloned().unwrap_or(Entry::File(0))
            } else if kind.is_file() {
                Entry::File(header.size()?)
            } else {
                Entry::Other
            };
            if KEPT.contains(&path.as_str()) && kind.is_file() {
                let mut content = Vec::new();
                (&mut entry).take(KEPT_MAX).read_to_end(&mut content)?;
                view.contents.insert(path.clone(), content);
            }
            view.add(path, item);
        }
        for names in view.children.values_mut() {
            names.sort();
            names.dedup();
        }
        Ok(view)
    }

    fn add(&mut self, path: String, item: Entry) {
        // An archive may omit directories' own entries: add the missing
        // ones, outermost first (a loop, however deep the path).
        let mut missing = Vec::new();
        let mut at = path.clone();
        while let Some((parent, _)) = at.rsplit_once('/') {
            let parent = if parent.is_empty() { "/" } else { parent }.to_string();
            if self.entries.contains_key(&parent) {
                break;
            }
            missing.push(parent.clone());
            at = parent;
        }
        for dir in missing.into_iter().rev() {
            self.link(dir, Entry::Dir);
        }
        self.link(path, item);
    }

    fn link(&mut self, path: String, item: Entry) {
        let (parent, name) = match path.rsplit_once('/') {
            Some(("", name)) => ("/".to_string(), name.to_string()),
            Some((parent, name)) => (parent.to_string(), name.to_string()),
            None => return,
        };
        self.children.entry(parent).or_default().push(name);
        self.entries.insert(path, item);
    }
}

impl ImageView for TarView {
    fn entry(&self, path: &str) -> Option<Entry> {
        self.entries.get(path).cloned()
    }

    fn list(&self, path: &str) -> Vec<String> {
        self.children.get(path).cloned().unwrap_or_default()
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.contents.get(path).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, Option<&str>, &str)]) -> TarView {
        let mut b = tar::Builder::new(Vec::new());
        for (path, link, content) in entries {
            let mut h = tar::Header::new_gnu();
            match link {
                Some(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    b.append_link(&mut h, path, target).unwrap();
                }
                None => {
                    h.set_size(content.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, content.as_bytes()).unwrap();
                }
            }
        }
        TarView::from_reader(&b.into_inner().unwrap()[..]).unwrap()
    }

    #[test]
    fn links_resolve_inside_the_image_only() {
        let v = archive(&[
            ("srv/carol/.bash_history", None, "x"),
            ("home/carol", Some("/srv/carol"), ""),
            ("home/up", Some("../../../../srv"), ""),
            ("loop/a", Some("b"), ""),
            ("loop/b", Some("a"), ""),
        ]);
        assert_eq!(resolve(&v, "/home/carol").as_deref(), Some("/srv/carol"));
        assert_eq!(resolve(&v, "/home/up/carol").as_deref(), Some("/srv/carol"));
        assert_eq!(resolve(&v, "/loop/a"), None);
        assert_eq!(resolve(&v, "/missing/x"), None);
        assert_eq!(v.list("/srv/carol"), [".bash_history"]);
        assert_eq!(v.entry("/srv/carol/.bash_history"), Some(Entry::File(1)));
        assert_eq!(join("/a/b", "../../../c"), "/c");
    }

    #[test]
    fn hard_links_are_their_targets_and_deep_paths_do_not_recurse() {
        let mut b = tar::Builder::new(Vec::new());
        let shadow = "root:$6$x:1::::::\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(shadow.len() as u64);
        h.set_mode(0o640);
        b.append_data(&mut h, "etc/shadow.orig", shadow.as_bytes())
            .unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Link);
        l.set_size(0);
        b.append_link(&mut l, "etc/shadow", "etc/shadow.orig")
            .unwrap();
        let deep = vec!["d"; 20_000].join("/") + "/f";
        let mut d = tar::Header::new_gnu();
        d.set_size(1);
        d.set_mode(0o644);
        b.append_data(&mut d, &deep, &b"x"[..]).unwrap();
        let v = TarView::from_reader(&b.into_inner().unwrap()[..]).unwrap();
        assert_eq!(
            v.entry("/etc/shadow"),
            Some(Entry::File(shadow.len() as u64))
        );
        // The target's content was not kept (not a file the check reads):
        // unreadable, which the check reports rather than passing.
        assert_eq!(v.read("/etc/shadow"), None);
        let left = crate::recipe::verify(&v, &Default::default());
        assert!(
            left.iter()
                .any(|l| l.reason.contains("hashes cannot be checked")),
            "{left:?}"
        );
        assert_eq!(v.entry(&format!("/{deep}")), Some(Entry::File(1)));
    }
}
