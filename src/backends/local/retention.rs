//! What retention means for a local image: its files under the images
//! directory. A registry record is data from outside like any other, so a
//! path is removed only if it is a regular file inside the images directory
//! (no `..`, no symlinked directories leading out, no symlink as the file).

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::lifecycle::{ImageStore, LifecycleError};
use crate::registry::{Artifact, Provider};

/// The local images directory as an [`ImageStore`].
#[derive(Clone, Debug)]
pub struct LocalImages {
    images_dir: PathBuf,
}

impl LocalImages {
    /// Images under `images_dir` (the local backend's `images_dir`).
    pub fn new(images_dir: impl Into<PathBuf>) -> LocalImages {
        LocalImages {
            images_dir: images_dir.into(),
        }
    }

    /// Removes one image file; `Ok(false)` when it was already gone.
    fn remove(&self, path: &Path) -> Result<bool, LifecycleError> {
        let unsafe_path = |reason: &str| LifecycleError::UnsafePath {
            path: path.display().to_string(),
            reason: reason.to_string(),
        };
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(unsafe_path("it contains '..'"));
        }
        let root = match self.images_dir.canonicalize() {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(unsafe_path(&format!("images directory: {e}"))),
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(unsafe_path("it names no file"));
        };
        let dir = match parent.canonicalize() {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(unsafe_path(&e.to_string())),
        };
        if dir == root || !dir.starts_with(&root) {
            return Err(unsafe_path(&format!(
                "it is not in a build directory under {}",
                root.display()
            )));
        }
        let file = dir.join(name);
        match std::fs::symlink_metadata(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(unsafe_path(&e.to_string())),
            Ok(m) if !m.file_type().is_file() => {
                return Err(unsafe_path("it is not a regular file"))
            }
            Ok(_) => {}
        }
        std::fs::remove_file(&file).map_err(|e| unsafe_path(&e.to_string()))?;
        // Its digest sidecar, and a partial copy a killed capture left.
        for extra in [
            super::capture::sidecar(&file),
            super::capture::partial(&file),
        ] {
            if std::fs::symlink_metadata(&extra).is_ok_and(|m| m.file_type().is_file()) {
                let _ = std::fs::remove_file(&extra);
            }
        }
        // The build's directory goes with its last image.
        let _ = std::fs::remove_dir(&dir);
        Ok(true)
    }
}

#[async_trait]
impl ImageStore for LocalImages {
    fn provider(&self) -> Provider {
        Provider::Local
    }

    async fn deprecate(
        &self,
        _artifact: &Artifact,
        _at: DateTime<Utc>,
    ) -> Result<Vec<String>, LifecycleError> {
        // A local image has no deprecation of its own: the registry status
        // is what resolution reads.
        Ok(Vec::new())
    }

    async fn delete(&self, artifact: &Artifact) -> Result<Vec<String>, LifecycleError> {
        let Some(path) = artifact.path.as_deref() else {
            return Ok(Vec::new());
        };
        let removed = self.remove(Path::new(path))?;
        Ok(vec![if removed {
            format!("file {path} removed")
        } else {
            format!("file {path} was already gone")
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(path: &Path) -> Artifact {
        Artifact {
            name: "local/x.qcow2".into(),
            provider: Provider::Local,
            region: None,
            image_id: "sha256:0".into(),
            account: None,
            path: Some(path.display().to_string()),
        }
    }

    #[tokio::test]
    async fn removes_image_files_and_their_empty_build_directory() {
        let home = tempfile::tempdir().unwrap();
        let images = home.path().join("images");
        let build = images.join("web/b1");
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("web.qcow2"), b"q").unwrap();
        std::fs::write(build.join("web.qcow2.sha256"), b"0").unwrap();
        std::fs::write(build.join("web.tar.zst"), b"t").unwrap();
        let store = LocalImages::new(&images);
        let done = store
            .delete(&artifact(&build.join("web.qcow2")))
            .await
            .unwrap();
        assert!(done[0].ends_with("web.qcow2 removed"), "{done:?}");
        assert!(build.exists());
        store
            .delete(&artifact(&build.join("web.tar.zst")))
            .await
            .unwrap();
        assert!(!build.exists());
        let again = store
            .delete(&artifact(&build.join("web.tar.zst")))
            .await
            .unwrap();
        assert!(again[0].ends_with("was already gone"));
    }

    #[tokio::test]
    async fn refuses_paths_that_lead_out_of_the_images_directory() {
        let home = tempfile::tempdir().unwrap();
        let images = home.path().join("images");
        std::fs::create_dir_all(images.join("web/b1")).unwrap();
        let outside = home.path().join("precious");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("data"), b"keep").unwrap();
        // a symlinked build directory pointing out, a symlink as the file,
        // '..', and the images directory itself
        std::os::unix::fs::symlink(&outside, images.join("web/evil")).unwrap();
        std::os::unix::fs::symlink(outside.join("data"), images.join("web/b1/link.qcow2")).unwrap();
        std::fs::write(images.join("top.qcow2"), b"x").unwrap();
        let store = LocalImages::new(&images);
        for path in [
            images.join("web/evil/data"),
            images.join("web/b1/link.qcow2"),
            images.join("web/b1/../../../precious/data"),
            images.join("top.qcow2"),
            outside.join("data"),
        ] {
            let err = store.delete(&artifact(&path)).await.unwrap_err();
            assert!(
                matches!(err, LifecycleError::UnsafePath { .. }),
                "{path:?}: {err}"
            );
        }
        assert_eq!(std::fs::read(outside.join("data")).unwrap(), b"keep");
        assert!(images.join("top.qcow2").exists());
    }
}
