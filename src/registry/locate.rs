//! Finding images by id or name in the configured locations, for
//! `bakehouse image add`: every match becomes an [`Artifact`].

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use sha2::{Digest, Sha256};

use super::{Artifact, Provider, RegistryError};

/// One place images can be found.
#[async_trait]
pub trait ImageLocator: Send + Sync {
    /// Where this locator looks, e.g. `aws/eu-west-1` (used in messages).
    fn location(&self) -> String;
    /// Every image here whose id or name is `id`.
    async fn locate(&self, id: &str) -> Result<Vec<Artifact>, RegistryError>;
}

/// Looks up every id in every location. Fails, naming them, if any id
/// matches nothing anywhere.
pub async fn locate_all(
    locators: &[Box<dyn ImageLocator>],
    ids: &[String],
) -> Result<Vec<Artifact>, RegistryError> {
    if ids.is_empty() {
        return Err(RegistryError::NoArtifacts);
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        let mut matched = false;
        for locator in locators {
            let artifacts = locator.locate(id).await?;
            matched |= !artifacts.is_empty();
            found.extend(artifacts);
        }
        if !matched {
            missing.push(id.clone());
        }
    }
    disambiguate(&mut found);
    if !missing.is_empty() {
        let searched: Vec<String> = locators.iter().map(|l| l.location()).collect();
        let mut names = missing;
        if let Some(last) = names.last_mut() {
            last.push_str(&format!(" (searched: {})", searched.join(", ")));
        }
        return Err(RegistryError::ImagesNotFound(names));
    }
    Ok(found)
}

/// Gives artifacts that share a location name (two AMIs in one region, as
/// in `image add order66 ubuntu14_rstudio`) unique names: the location
/// followed by the image id (`aws/us-east-1/ami-0123...`). Their order is
/// kept: ids in the order given, then location by location. Resolving by
/// provider and region picks the first artifact that serves them, so the
/// first image given wins.
fn disambiguate(artifacts: &mut [Artifact]) {
    // The same image given twice stays a duplicate (and is refused).
    let distinct: std::collections::HashSet<(String, String)> = artifacts
        .iter()
        .map(|a| (a.name.clone(), a.image_id.clone()))
        .collect();
    let mut count = std::collections::HashMap::<String, usize>::new();
    for (name, _) in distinct {
        *count.entry(name).or_default() += 1;
    }
    for a in artifacts.iter_mut() {
        if count.get(&a.name).is_some_and(|n| *n > 1) {
            a.name = format!("{}/{}", a.name, a.image_id);
        }
    }
}

/// AMIs in one EC2 region, matched by image id or by image name.
pub struct Ec2Locator {
    client: aws_sdk_ec2::Client,
    region: String,
}

impl Ec2Locator {
    /// A locator for the region of `config`.
    pub fn new(config: &aws_config::SdkConfig) -> Ec2Locator {
        Ec2Locator {
            client: aws_sdk_ec2::Client::new(config),
            region: config
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".into()),
        }
    }
}

#[async_trait]
impl ImageLocator for Ec2Locator {
    fn location(&self) -> String {
        format!("aws/{}", self.region)
    }

    async fn locate(&self, id: &str) -> Result<Vec<Artifact>, RegistryError> {
        let req = self.client.describe_images();
        let req = if id.starts_with("ami-") {
            req.image_ids(id)
        } else {
            req.filters(Filter::builder().name("name").values(id).build())
        };
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                let text = aws_sdk_ec2::error::DisplayErrorContext(&e).to_string();
                if text.contains("InvalidAMIID") {
                    return Ok(Vec::new());
                }
                return Err(RegistryError::Lookup {
                    location: self.location(),
                    message: text,
                });
            }
        };
        Ok(out
            .images()
            .iter()
            .filter_map(|image| {
                Some(Artifact {
                    name: format!("aws/{}", self.region),
                    provider: Provider::Aws,
                    region: Some(self.region.clone()),
                    image_id: image.image_id()?.to_string(),
                    account: image.owner_id().map(str::to_string),
                    path: None,
                })
            })
            .collect())
    }
}

/// Disk images made by local builds under a directory (default
/// `.bakehouse/images`), matched by path, file name or `sha256:` digest.
pub struct LocalLocator {
    dir: PathBuf,
}

impl LocalLocator {
    /// A locator for images under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> LocalLocator {
        LocalLocator { dir: dir.into() }
    }
}

/// `sha256:<hex>` of a file's content.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

fn local_artifact(path: &Path, digest: String) -> Artifact {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Artifact {
        name: format!("local/{file_name}"),
        provider: Provider::Local,
        region: None,
        image_id: digest,
        account: None,
        path: Some(
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
                .to_string(),
        ),
    }
}

/// Checks by content that a local file is an image: a qcow2, a raw disk
/// (an MBR or GPT partition table) or filesystem (ext2/3/4, xfs), or a
/// zstd-compressed tarball (what local builds capture), gzip or plain tar.
/// The reason names what was found otherwise.
pub fn check_image_content(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut head = vec![0u8; 1088];
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = &head[..read];
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let image = at(0, b"QFI\xfb")
        || at(0, &[0x28, 0xb5, 0x2f, 0xfd])
        || at(0, &[0x1f, 0x8b])
        || at(257, b"ustar")
        || at(510, &[0x55, 0xaa])
        || at(1080, &[0x53, 0xef])
        || at(0, b"XFSB");
    if image {
        Ok(())
    } else {
        Err("not an image: expected a qcow2, a raw disk or filesystem image (MBR/GPT, ext4, xfs) or a .tar.zst/.tar.gz/.tar archive".into())
    }
}

fn is_image_file(path: &Path) -> bool {
    let name = path.to_string_lossy();
    [".qcow2", ".raw", ".img", ".tar.zst", ".tar.gz", ".tar"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn image_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && depth > 0 {
            image_files(&path, out, depth - 1);
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
}

#[async_trait]
impl ImageLocator for LocalLocator {
    fn location(&self) -> String {
        format!("local/{}", self.dir.display())
    }

    async fn locate(&self, id: &str) -> Result<Vec<Artifact>, RegistryError> {
        let io = |e: std::io::Error| RegistryError::Lookup {
            location: self.location(),
            message: e.to_string(),
        };
        let as_path = Path::new(id);
        if as_path.is_file() {
            check_image_content(as_path).map_err(|reason| RegistryError::InvalidField {
                field: "image file",
                value: as_path.display().to_string(),
                reason,
            })?;
            return Ok(vec![local_artifact(
                as_path,
                file_digest(as_path).map_err(io)?,
            )]);
        }
        let mut files = Vec::new();
        image_files(&self.dir, &mut files, 3);
        files.sort();
        let mut out = Vec::new();
        for file in files {
            let name_matches = file.file_name().is_some_and(|n| n.to_string_lossy() == id);
            let digest_wanted = id.starts_with("sha256:");
            if !name_matches && !digest_wanted {
                continue;
            }
            // A `<file>.sha256` sidecar written by the capture step saves hashing.
            let sidecar = PathBuf::from(format!("{}.sha256", file.display()));
            let digest = match std::fs::read_to_string(&sidecar) {
                Ok(text) => format!(
                    "sha256:{}",
                    text.split_whitespace().next().unwrap_or_default()
                ),
                Err(_) => file_digest(&file).map_err(io)?,
            };
            if name_matches || digest == id {
                check_image_content(&file).map_err(|reason| RegistryError::InvalidField {
                    field: "image file",
                    value: file.display().to_string(),
                    reason,
                })?;
                out.push(local_artifact(&file, digest));
            }
        }
        Ok(out)
    }
}
