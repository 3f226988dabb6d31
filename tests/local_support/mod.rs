//! Support for the local build tests: a busybox root filesystem made on the
//! spot, a pipeline over an embedded registry and the local backend, builds run
//! through the pipeline state machine on the local ASL runner, and readers
//! for the images a build produces (with the host tools, independently of
//! the backend's own code).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub mod disks;

use bakehouse::asl::{EventKind, Execution, ExecutionStatus, SystemClock};
use bakehouse::backends::local::{LocalBackend, LocalSettings};
use bakehouse::build::{BuildRecord, BuildStore, SqliteBuildStore, Step};
use bakehouse::pipeline::io::ExecutionInput;
use bakehouse::pipeline::{load_for_build, local, Pipeline, PipelineSettings};
use bakehouse::registry::{
    Lookup, Provider, Registry, Resolution, ResolveQuery, SqliteStore, VersionPattern,
};
use serde_json::{json, Value};

/// The `bakehouse` CLI with its local state in `home` (`registry.db` and
/// the work and image directories), no AWS table, the default log, and no
/// stdin.
pub fn cli(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bakehouse"));
    cmd.arg("--db")
        .arg(home.join("registry.db"))
        .env("BAKEHOUSE_HOME", home)
        .env_remove("BAKEHOUSE_TABLE")
        .env_remove("BAKEHOUSE_LOG")
        .stdin(std::process::Stdio::null());
    cmd
}

/// The file in `dir` whose name ends with `suffix` (an image a CLI build
/// wrote under `images/NAME/BUILD`).
pub fn file_ending(dir: &Path, suffix: &str) -> PathBuf {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap_or_else(|| panic!("no {suffix} in {}", dir.display()))
}

/// A real SHA-512 crypt hash (`openssl passwd -6 -salt bakehous bakehouse`).
pub const ROOT_HASH: &str =
    "$6$bakehous$Y0NABC1W5ab1HZbUuqIXC/WWVwMO4bTnb9SOfFl2NbOwGQandBEsJa0Y2ShKqtLRTLYYKcvzqih4qKMORGya6.";

/// A temporary world: registry, build records, work and image directories.
pub struct Harness {
    /// Holds everything; removed at the end.
    pub dir: tempfile::TempDir,
    /// The step handlers.
    pub pipeline: Pipeline,
    /// The backend under test (same settings as the pipeline's).
    pub backend: LocalBackend,
    /// The registry.
    pub registry: Registry,
    /// The build records.
    pub builds: Arc<dyn BuildStore>,
}

/// What one build did.
#[derive(Debug)]
pub struct Outcome {
    /// The build.
    pub build_id: String,
    /// The state machine execution (status, output, history).
    pub execution: Execution,
    /// What the first launch returned (`$.build` after the Launch state).
    pub launch: Value,
    /// The step that failed and its error (type name, cause), from the record.
    pub error: Option<(Step, String, String)>,
    /// What teardown returned (absent on a cache hit, which skips it).
    pub teardown: Option<Value>,
    /// The record after the execution.
    pub record: BuildRecord,
}

impl Outcome {
    /// `SUCCEEDED` or `FAILED`, from the record.
    pub fn status(&self) -> String {
        self.record.status.to_string()
    }

    /// The registered `name@version`.
    pub fn version(&self) -> Option<&str> {
        self.record.version.as_deref()
    }

    /// Path of the artifact whose name ends with `suffix`.
    pub fn artifact(&self, suffix: &str) -> PathBuf {
        let a = self
            .record
            .artifacts
            .iter()
            .find(|a| a.name.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} artifact in {:?}", self.record.artifacts));
        PathBuf::from(a.path.clone().expect("artifact path"))
    }

    /// The output of the state `name` when it last exited.
    fn exited(&self, name: &str) -> Option<Value> {
        self.execution
            .history
            .iter()
            .rev()
            .find_map(|e| match &e.kind {
                EventKind::StateExited { state, output } if state == name => Some(output.clone()),
                _ => None,
            })
    }
}

impl Harness {
    /// A harness whose pipeline fails on purpose after `fail_at`.
    pub fn new(fail_at: Option<Step>) -> Harness {
        init_logging();
        check_host();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("registry.db")).expect("registry");
        let builds: Arc<dyn BuildStore> =
            Arc::new(SqliteBuildStore::new(store.connection()).expect("build store"));
        let registry = Registry::new(Arc::new(store));
        let backend = LocalBackend::new(LocalSettings {
            work_root: dir.path().join("work"),
            images_dir: dir.path().join("images"),
            ..Default::default()
        });
        let pipeline = Pipeline::new(
            registry.clone(),
            builds.clone(),
            Arc::new(backend.clone()),
            PipelineSettings {
                scratch_dir: dir.path().join("scratch"),
                fail_at,
            },
        );
        Harness {
            dir,
            pipeline,
            backend,
            registry,
            builds,
        }
    }

    /// A path in the harness directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating directories) and returns its path.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    /// The execution input of a build of the recipe file.
    pub fn request(&self, recipe: &Path, build_id: &str) -> ExecutionInput {
        let (_, bundle) = load_for_build(recipe).expect("recipe loads");
        serde_json::from_value(json!({
            "recipe": bundle.recipe,
            "files": serde_json::to_value(&bundle.files).unwrap(),
            "trigger": "cli",
            "build_id": build_id,
        }))
        .expect("execution input")
    }

    /// Runs a build of the recipe file through the pipeline state machine
    /// (`statemachines/pipeline.asl.json` on the local ASL runner, each Task
    /// mapped to its step handler).
    pub async fn build(&self, recipe: &Path, build_id: &str) -> Outcome {
        self.execute(&self.request(recipe, build_id), build_id)
            .await
    }

    /// Runs a build of a prepared execution input (see [`Harness::build`]).
    pub async fn execute(&self, input: &ExecutionInput, build_id: &str) -> Outcome {
        let execution = local::execute(
            self.pipeline.clone(),
            input,
            build_id,
            Arc::new(SystemClock),
            None,
        )
        .await
        .expect("the definition loads");
        let record = self
            .builds
            .get(build_id)
            .await
            .expect("record")
            .expect("record exists");
        let error = record.failure.as_ref().map(|f| {
            (
                Step::from_name(&f.step).expect("a step name"),
                f.error.clone(),
                f.cause.clone(),
            )
        });
        let mut out = Outcome {
            build_id: build_id.to_string(),
            execution,
            launch: Value::Null,
            error,
            teardown: None,
            record,
        };
        out.launch = out
            .exited("Launch")
            .map(|s| s["build"].clone())
            .unwrap_or_default();
        out.teardown = out.exited("Teardown").or_else(|| {
            out.exited("TeardownAfterFailure")
                .map(|s| s["teardown"].clone())
        });
        match &out.execution.status {
            ExecutionStatus::Succeeded => assert!(out.error.is_none(), "{:?}", out.error),
            ExecutionStatus::Failed { error, cause } => {
                let (_, kind, message) = out.error.clone().expect("a failed build records why");
                // The execution's cause is the Lambda error payload, as in
                // AWS; the record keeps its message.
                let said = bakehouse::pipeline::failure_message(error, cause.as_deref());
                assert_eq!((error, &said), (&kind, &message));
            }
            ExecutionStatus::TimedOut => panic!("execution timed out"),
        }
        out
    }

    /// The latest version of `name` and its local artifact.
    pub async fn resolve(&self, name: &str) -> Resolution {
        self.registry
            .resolve(&ResolveQuery {
                lookup: Lookup::Name(name.to_string()),
                pattern: VersionPattern::Latest,
                include_inactive: false,
                provider: Some(Provider::Local),
                region: None,
            })
            .await
            .expect("resolves")
    }

    /// Lines of the host's mount table that mention the harness directory.
    pub fn our_mounts(&self) -> Vec<String> {
        let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let needle = self.dir.path().display().to_string();
        table
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Entries of the work root other than the digest cache and the kept
    /// whole-disk bases.
    pub fn work_dirs(&self) -> Vec<String> {
        match fs::read_dir(&self.backend.settings().work_root) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".cache" && n != ".disks")
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "bakehouse=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Fails with a clear message when the host cannot run local builds.
fn check_host() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "local build tests need root (unshare, chroot, mknod)"
    );
    for tool in [
        "/bin/busybox",
        "/usr/bin/qemu-img",
        "/usr/sbin/mke2fs",
        "/usr/sbin/debugfs",
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: `make setup` installs busybox-static, qemu-utils and e2fsprogs"
        );
    }
}

/// Runs a host command, asserting success; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_mode(path: &Path, content: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes a small busybox root filesystem at `root` with everything the
/// clean policy removes, a FIFO and a device node.
pub fn busybox_rootfs(root: &Path) {
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc/ssh",
        "root/.ssh",
        "home/alice/.ssh",
        "var/log",
        "var/tmp",
        "tmp",
        "proc",
        "dev",
        "run",
        "opt",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let applets = run(Command::new("/bin/busybox").arg("--list"));
    for applet in applets.lines().filter(|a| *a != "busybox") {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    write_mode(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n",
        0o644,
    );
    write_mode(&root.join("etc/group"), "root:x:0:\nalice:x:1000:\n", 0o644);
    write_mode(
        &root.join("etc/shadow"),
        &format!("root:{ROOT_HASH}:19700:0:99999:7:::\nalice:{ROOT_HASH}:19700:0:99999:7:::\n"),
        0o640,
    );
    write_mode(&root.join("etc/hostname"), "busybox-base\n", 0o644);
    write_mode(
        &root.join("etc/resolv.conf"),
        "nameserver 192.0.2.53\n",
        0o644,
    );
    write_mode(
        &root.join("etc/fstab"),
        "# <file system> <mount point> <type> <options> <dump> <pass>\n\
         /dev/vda1 / ext4 defaults 0 1\n\
         /dev/vdb /mnt auto defaults,nofail,comment=cloudconfig 0 2\n",
        0o644,
    );
    write_mode(
        &root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
        0o444,
    );
    write_mode(
        &root.join("etc/ssh/ssh_host_ed25519_key"),
        "PRIVATE KEY\n",
        0o600,
    );
    write_mode(
        &root.join("etc/ssh/ssh_host_ed25519_key.pub"),
        "ssh-ed25519 AAAA host\n",
        0o644,
    );
    write_mode(
        &root.join("etc/ssh/ssh_host_rsa_key"),
        "PRIVATE KEY\n",
        0o600,
    );
    write_mode(
        &root.join("etc/ssh/sshd_config"),
        "PermitRootLogin no\n",
        0o644,
    );
    write_mode(
        &root.join("root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBakehouseTestKey builder@example\n",
        0o600,
    );
    write_mode(
        &root.join("root/.ash_history"),
        "ls -la\ncat /etc/shadow\n",
        0o600,
    );
    write_mode(
        &root.join("home/alice/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAalice alice@example\n",
        0o600,
    );
    write_mode(&root.join("home/alice/.bash_history"), "sudo -i\n", 0o600);
    write_mode(&root.join("home/alice/notes.txt"), "keep me\n", 0o644);
    run(Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(root.join("home/alice")));
    write_mode(&root.join("var/log/messages.log"), "boot ok\n", 0o640);
    write_mode(&root.join("var/log/dpkg.log"), "install busybox\n", 0o644);
    write_mode(&root.join("var/log/messages.log.1"), "old\n", 0o640);
    write_mode(&root.join("tmp/junk"), "junk\n", 0o644);
    write_mode(&root.join("tmp/.hidden-junk"), "junk\n", 0o644);
    write_mode(&root.join("var/tmp/cache.bin"), "junk\n", 0o644);
    run(Command::new("mkfifo").arg(root.join("etc/bakehouse.fifo")));
    run(Command::new("mknod")
        .arg(root.join("etc/bakehouse-null"))
        .args(["c", "1", "3"]));
}

/// Packs a tree with GNU tar (`.tar.gz` or `.tar.zst` by the name).
pub fn pack(root: &Path, archive: &Path) {
    let compress = if archive.to_string_lossy().ends_with(".zst") {
        "--zstd"
    } else {
        "--gzip"
    };
    run(Command::new("tar")
        .arg("--numeric-owner")
        .arg(compress)
        .arg("-cf")
        .arg(archive)
        .arg("-C")
        .arg(root)
        .arg("."));
}

/// Extracts a `.tar.zst` with GNU tar into `out`.
pub fn untar(archive: &Path, out: &Path) {
    fs::create_dir_all(out).unwrap();
    run(Command::new("tar")
        .args(["--zstd", "--numeric-owner", "-xpf"])
        .arg(archive)
        .arg("-C")
        .arg(out));
}

/// A qcow2 image converted to raw (for debugfs), in `scratch`.
pub fn qcow2_to_raw(qcow2: &Path, scratch: &Path) -> PathBuf {
    let info = run(Command::new("qemu-img").arg("info").arg(qcow2));
    assert!(info.contains("file format: qcow2"), "{info}");
    let raw = scratch.join(format!(
        "{}.raw",
        qcow2.file_name().unwrap().to_string_lossy()
    ));
    run(Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(qcow2)
        .arg(&raw));
    raw
}

/// Runs a debugfs request on a raw ext4 image; returns stdout.
pub fn debugfs(raw: &Path, request: &str) -> String {
    run(Command::new("debugfs").arg("-R").arg(request).arg(raw))
}

/// Dumps a raw ext4 image's files into `out`.
pub fn dump(raw: &Path, out: &Path) {
    fs::create_dir_all(out).unwrap();
    debugfs(raw, &format!("rdump / {}", out.display()));
}

/// Names in a directory (empty when it does not exist).
pub fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that every item of the default clean policy was applied to the
/// tree made by [`busybox_rootfs`].
pub fn assert_cleaned(tree: &Path) {
    let leftovers = bakehouse::recipe::verify_tree(tree, &Default::default());
    assert!(leftovers.is_empty(), "leftovers: {leftovers:?}");
    for gone in [
        "root/.ssh/authorized_keys",
        "home/alice/.ssh/authorized_keys",
        "root/.ash_history",
        "home/alice/.bash_history",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_ed25519_key.pub",
        "etc/ssh/ssh_host_rsa_key",
        "var/log/messages.log.1",
    ] {
        assert!(
            fs::symlink_metadata(tree.join(gone)).is_err(),
            "{gone} should be gone"
        );
    }
    assert_eq!(
        names(&tree.join("etc/ssh")),
        BTreeSet::from(["sshd_config".to_string()])
    );
    assert_eq!(fs::read(tree.join("etc/machine-id")).unwrap(), b"");
    assert_eq!(fs::read(tree.join("var/log/messages.log")).unwrap(), b"");
    assert_eq!(fs::read(tree.join("var/log/dpkg.log")).unwrap(), b"");
    assert_eq!(names(&tree.join("tmp")), BTreeSet::new());
    assert_eq!(names(&tree.join("var/tmp")), BTreeSet::new());
    let fstab = fs::read_to_string(tree.join("etc/fstab")).unwrap();
    assert!(fstab.contains("/dev/vda1 / ext4 defaults 0 1"), "{fstab}");
    assert!(!fstab.contains("/mnt"), "{fstab}");
    // Hashes are removed, not only locked (`clean.passwords: lock` keeps them).
    let shadow = fs::read_to_string(tree.join("etc/shadow")).unwrap();
    for line in shadow.lines() {
        let hash = line.split(':').nth(1).unwrap();
        assert_eq!(hash, "!", "{line}");
    }
    assert!(!shadow.contains(ROOT_HASH));
    assert_eq!(
        fs::read_to_string(tree.join("home/alice/notes.txt")).unwrap(),
        "keep me\n"
    );
}

/// The Debian bookworm minbase base (`make` target of the demo, made once
/// with mmdebstrap from Debian packages and cached in the clone's
/// `.bakehouse/bases/`): a real distribution with perl, apt and dpkg.
pub fn debian_base() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(|| {
        let top = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rel = ".bakehouse/bases/bookworm-minbase.tar.zst";
        if !top.join(rel).is_file() {
            run(Command::new("make").arg("-s").arg("-C").arg(top).arg(rel));
        }
        top.join(rel)
    })
    .clone()
}

/// The notes a build recorded (provisioner output tails among them), as
/// one text.
pub fn notes(record: &BuildRecord) -> String {
    record
        .steps
        .iter()
        .flat_map(|s| s.notes.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n")
}
