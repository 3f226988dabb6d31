//! Local bake benchmark, measured in one run on one base image:
//!
//! - a bake of a fixed recipe (five shell steps on the busybox base of the
//!   local build tests, given as an ext4 qcow2) through the pipeline state
//!   machine with the local chroot backend: unpack the qcow2, run the steps,
//!   clean and verify, capture a compressed qcow2 and a `.tar.zst` with
//!   their sha256, register;
//! - `virt-customize` (Debian `libguestfs-tools`, TCG: this machine has no
//!   KVM) running the same five commands on a copy of the same qcow2, which
//!   it modifies in place: no clean, no second artifact, no registry;
//! - the cache-hit rebuild of the unchanged recipe (bake key registered:
//!   nothing is launched);
//! - the demo (`recipes/demo.yaml` on the demo's bootable Debian bookworm
//!   disk: `apt-get install jq` with network, a file, a script, two tests
//!   run inside the booted captured disk), one forced bake, and its Test
//!   step alone;
//! - the sandbox's cost per command: 100 × `/bin/true` through the
//!   bubblewrap sandbox (user namespace, seccomp, cgroup) against the
//!   sandbox bakehouse used before it (`unshare` of mount, PID, UTS, IPC and
//!   network namespaces, `/proc` and a minimal `/dev` mounted, `chroot`),
//!   reproduced here as the peer, on the same tree.
//!
//! - the same five steps on a bootable disk: the demo's base (a Debian
//!   bookworm GPT disk, 3 GiB, kernel and GRUB), bakehouse against
//!   virt-customize on a copy of the same qcow2. bakehouse's first build
//!   unpacks the disk and keeps it (reported alone); the later ones mount
//!   an overlay over the kept base and capture in place (median). With the
//!   peak scratch space of the bakehouse builds (allocated bytes under the
//!   work root, kept base included, sampled every 200 ms).
//!
//! Needs root. Run with `make bench` (which installs libguestfs-tools) or
//! `cargo bench --bench local_bake`.

#[path = "../tests/local_support/mod.rs"]
mod local_support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bakehouse::backends::local::{remove_sandbox_cgroup, run_in_sandbox};
use local_support::{busybox_rootfs, run, Harness};

/// Bakes and virt-customize runs measured (median reported).
const SLOW_RUNS: usize = 3;
/// Cache-hit rebuilds measured.
const HIT_RUNS: usize = 9;
/// Commands run through each sandbox.
const SANDBOX_RUNS: usize = 100;

/// The previous sandbox's setup (its whole host side), kept as the peer.
const UNSHARE_CHROOT: &str = r#"exec 2>&1
root=$1
shift
mount -t proc -o nosuid,nodev,noexec proc "$root/proc" || exit 125
mount -t tmpfs -o nosuid,noexec,mode=0755,size=1024k bakehouse-dev "$root/dev" || exit 125
for d in null zero full random urandom tty; do
  : > "$root/dev/$d" && mount --bind "/dev/$d" "$root/dev/$d" || exit 125
done
echo bakehouse-build > /proc/sys/kernel/hostname
ip link set lo up 2>/dev/null || true
exec chroot "$root" "$@"
"#;

/// Runs `true` `SANDBOX_RUNS` times through the previous sandbox.
fn unshare_chroot(root: &Path) -> Duration {
    let start = Instant::now();
    for _ in 0..SANDBOX_RUNS {
        let status = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
            ])
            .args([
                "--uts",
                "--ipc",
                "--net",
                "--",
                "/bin/sh",
                "-c",
                UNSHARE_CHROOT,
                "sandbox",
            ])
            .arg(root)
            .arg("/bin/true")
            .status()
            .unwrap();
        assert!(status.success());
    }
    start.elapsed()
}

/// Runs `true` `SANDBOX_RUNS` times through the bubblewrap sandbox.
async fn bubblewrap(root: &Path) -> Duration {
    let argv = vec!["/bin/true".to_string()];
    // The first run hands the tree to the sandbox's ids; not measured.
    assert_eq!(
        run_in_sandbox("bench-sandbox", root, &argv).await.unwrap(),
        0
    );
    let start = Instant::now();
    for _ in 0..SANDBOX_RUNS {
        assert_eq!(
            run_in_sandbox("bench-sandbox", root, &argv).await.unwrap(),
            0
        );
    }
    let took = start.elapsed();
    remove_sandbox_cgroup("bench-sandbox", root).unwrap();
    took
}

/// The provisioning commands, one shell step each, run by both sides.
const STEPS: [&str; 5] = [
    "mkdir -p /opt/app/bin /opt/app/etc /var/lib/app && echo 'app:x:990:990::/nonexistent:/bin/false' >> /etc/passwd",
    "printf 'listen=0.0.0.0:8080\\nworkers=4\\n' > /opt/app/etc/app.conf && chmod 0640 /opt/app/etc/app.conf",
    "for i in $(seq 1 500); do echo \"record $i\"; done > /var/lib/app/seed.txt",
    "sha256sum /var/lib/app/seed.txt > /var/lib/app/seed.sha256 && sha256sum -c /var/lib/app/seed.sha256",
    "printf '#!/bin/sh\\nexec cat /opt/app/etc/app.conf\\n' > /opt/app/bin/app && chmod 0755 /opt/app/bin/app && /opt/app/bin/app",
];

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The busybox base as an ext4 qcow2 that both tools accept: virt-customize
/// needs `/etc/os-release` and an fstab root it can find (`LABEL=root`).
fn base_image(h: &Harness) -> std::path::PathBuf {
    let root = h.path("base-root");
    busybox_rootfs(&root);
    fs::write(
        root.join("etc/os-release"),
        "ID=busybox\nNAME=\"BusyBox\"\nVERSION_ID=1\nPRETTY_NAME=\"bakehouse bench base\"\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/fstab"),
        "LABEL=root / ext4 defaults 0 1\n/dev/vdb /mnt auto defaults,nofail,comment=cloudconfig 0 2\n",
    )
    .unwrap();
    let raw = h.path("base.raw");
    let qcow2 = h.path("base.qcow2");
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "root", "-d"])
        .arg(&root)
        .arg(&raw)
        .arg("96M"));
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-c", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2));
    fs::remove_file(&raw).unwrap();
    qcow2
}

fn recipe(h: &Harness, base: &Path) -> std::path::PathBuf {
    recipe_named(h, base, "bench-bake")
}

fn recipe_named(h: &Harness, base: &Path, name: &str) -> std::path::PathBuf {
    let mut text = format!(
        "name: {name}\nlabel: Bench bake\nos: linux\nbase:\n  path: {}\nprovisioners:\n",
        base.display()
    );
    for step in STEPS {
        let quoted = serde_json::to_string(step).unwrap();
        text.push_str(&format!("  - type: shell\n    inline: [{quoted}]\n"));
    }
    h.write(&format!("recipe/{name}.yaml"), &text)
}

/// Allocated bytes below `dir` (0 when it is gone).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    // Not into mounts: a build's overlay shows the kept tree again.
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .same_file_system(true)
        .into_iter()
        .filter_map(|e| e.ok()?.path().symlink_metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Runs `f` while a thread samples [`allocated`] of `dir`; returns the
/// result and the peak.
async fn with_peak<T>(dir: &Path, f: impl std::future::Future<Output = T>) -> (T, u64) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, dir) = (stop.clone(), dir.to_path_buf());
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            peak = peak.max(allocated(&dir));
            std::thread::sleep(Duration::from_millis(200));
        }
        peak
    });
    let out = f.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (out, sampler.join().unwrap())
}

/// A libguestfs tool, with the appliance run by qemu directly under TCG
/// (this machine has no KVM).
fn libguestfs(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    cmd
}

fn virt_customize(base: &Path, scratch: &Path) -> Duration {
    let disk = scratch.join("virt-customize.qcow2");
    let start = Instant::now();
    fs::copy(base, &disk).unwrap();
    let mut cmd = libguestfs("virt-customize");
    cmd.args(["--quiet", "--no-network", "-a"]).arg(&disk);
    for step in STEPS {
        cmd.args(["--run-command", step]);
    }
    run(&mut cmd);
    let took = start.elapsed();
    // The commands ran: the file the last step wrote is in the image.
    let out = run(libguestfs("virt-cat")
        .arg("-a")
        .arg(&disk)
        .arg("/opt/app/etc/app.conf"));
    assert!(out.contains("workers=4"), "{out}");
    fs::remove_file(&disk).unwrap();
    took
}

fn main() {
    // Step logs would drown the figures; RUST_LOG=info brings them back.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    if Command::new("virt-customize")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("virt-customize is missing: `make bench` installs libguestfs-tools");
        std::process::exit(2);
    }
    let h = Harness::new(None);
    let base = base_image(&h);
    let recipe = recipe(&h, &base);

    let mut bakes = Vec::new();
    let mut steps: Vec<(String, Duration)> = Vec::new();
    for i in 0..SLOW_RUNS {
        let id = format!("bench-bake-{i}");
        let mut input = h.request(&recipe, &id);
        // The first bake registers the recipe's bake key; the later ones are
        // forced (a forced bake registers under its own key).
        input.force = i > 0;
        let start = Instant::now();
        let out = h.execute(&input, &id).await;
        bakes.push(start.elapsed());
        assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
        assert_eq!(out.launch["cache_hit"], false);
        steps = out
            .record
            .steps
            .iter()
            .filter_map(|s| {
                let end = s.finished_at?;
                Some((s.step.to_string(), (end - s.started_at).to_std().ok()?))
            })
            .collect();
    }

    let mut hits = Vec::new();
    for i in 0..HIT_RUNS {
        let id = format!("bench-hit-{i}");
        let start = Instant::now();
        let out = h.build(&recipe, &id).await;
        hits.push(start.elapsed());
        assert_eq!(out.launch["cache_hit"], true, "a rebuild is a cache hit");
    }

    let scratch = h.path("scratch-vc");
    fs::create_dir_all(&scratch).unwrap();
    let virt: Vec<Duration> = (0..SLOW_RUNS)
        .map(|_| virt_customize(&base, &scratch))
        .collect();

    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/demo.yaml");
    let mut input = h.request(&demo, "bench-demo");
    input.force = true;
    let start = Instant::now();
    let out = h.execute(&input, "bench-demo").await;
    let demo_bake = start.elapsed();
    assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
    // The Test step of that bake: the captured disk booted (TCG here) and
    // the recipe's tests run inside.
    let demo_test = out
        .record
        .steps
        .iter()
        .find(|s| s.step == bakehouse::build::Step::Test)
        .and_then(|s| (s.finished_at? - s.started_at).to_std().ok())
        .expect("the demo's Test step finished");

    // The same five steps on the demo's bootable Debian disk.
    let disk = local_support::disks::demo_disk();
    let disk_recipe = recipe_named(&h, &disk, "bench-disk");
    // The first build on the disk unpacks it and keeps it (the demo bake
    // kept it already: dropped first); the others mount an overlay over the
    // kept base and capture in place. The timed builds run alone; two more,
    // a first and a kept-base one, are sampled for scratch space.
    fs::remove_dir_all(h.path("work/.disks")).unwrap();
    let disk_build = |i: usize, peak_of: bool| {
        let id = format!("bench-disk-{i}");
        let mut input = h.request(&disk_recipe, &id);
        input.force = i > 0;
        let h = &h;
        async move {
            let start = Instant::now();
            let (out, peak) = if peak_of {
                with_peak(&h.path("work"), h.execute(&input, &id)).await
            } else {
                (h.execute(&input, &id).await, 0)
            };
            let took = start.elapsed();
            assert_eq!(out.status(), "SUCCEEDED", "{:?}", out.error);
            (out, took, peak)
        }
    };
    let (_, disk_first, _) = disk_build(0, false).await;
    let mut disk_bakes = Vec::new();
    let mut disk_out = std::path::PathBuf::new();
    for i in 1..=SLOW_RUNS {
        let (out, took, _) = disk_build(i, false).await;
        let notes = local_support::notes(&out.record);
        assert!(notes.contains("written in place"), "{notes}");
        disk_bakes.push(took);
        disk_out = out.artifact(".qcow2");
    }
    let (_, _, peak_warm) = disk_build(SLOW_RUNS + 1, true).await;
    let kept_base = allocated(&h.path("work/.disks"));
    fs::remove_dir_all(h.path("work/.disks")).unwrap();
    let (_, _, peak_scratch) = disk_build(SLOW_RUNS + 2, true).await;
    let disk_virt: Vec<Duration> = (0..SLOW_RUNS)
        .map(|_| virt_customize(&disk, &scratch))
        .collect();
    let (disk_bake, disk_virt) = (median(disk_bakes), median(disk_virt));
    let virtual_size = {
        let info = run(Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&disk));
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        v["virtual-size"].as_u64().unwrap()
    };
    let out_size = fs::metadata(&disk_out).unwrap().len();

    let old_tree = h.path("sandbox-old");
    let new_tree = h.path("sandbox-new");
    busybox_rootfs(&old_tree);
    busybox_rootfs(&new_tree);
    let old = unshare_chroot(&old_tree);
    let new = bubblewrap(&new_tree).await;

    let (bake, hit, virt) = (median(bakes), median(hits), median(virt));
    println!(
        "local bake: busybox base ({} KiB qcow2), {} shell steps",
        fs::metadata(&base).unwrap().len() / 1024,
        STEPS.len()
    );
    println!(
        "  {:<46} {:>9.2} s",
        format!("bakehouse build (median of {SLOW_RUNS})"),
        secs(bake)
    );
    for (step, took) in &steps {
        println!("    {:<44} {:>9.2} s", step, secs(*took));
    }
    println!(
        "  {:<46} {:>9.2} s",
        format!("virt-customize, same commands (median of {SLOW_RUNS})"),
        secs(virt)
    );
    println!(
        "  {:<46} {:>9.1} x",
        "ratio virt-customize / bakehouse",
        secs(virt) / secs(bake)
    );
    println!(
        "  {:<46} {:>9.3} s",
        format!("cache-hit rebuild (median of {HIT_RUNS})"),
        secs(hit)
    );
    println!(
        "  {:<46} {:>9.0} x",
        "ratio bake / cache hit",
        secs(bake) / secs(hit)
    );
    println!(
        "  {:<46} {:>9.2} s",
        "demo bake (recipes/demo.yaml, bootable disk, apt)",
        secs(demo_bake)
    );
    println!(
        "  {:<46} {:>9.2} s",
        "  of which Test (boot + 2 tests, TCG; target 60)",
        secs(demo_test)
    );
    println!(
        "bootable disk: the demo's base ({} MiB qcow2, {} MiB disk, GPT, Debian bookworm), {} shell steps",
        fs::metadata(&disk).unwrap().len() >> 20,
        virtual_size >> 20,
        STEPS.len()
    );
    println!(
        "  {:<46} {:>9.2} s",
        "bakehouse, first build (unpacks, keeps the base)",
        secs(disk_first)
    );
    println!(
        "  {:<46} {:>9.2} s",
        format!("bakehouse, kept base (median of {SLOW_RUNS})"),
        secs(disk_bake)
    );
    println!(
        "  {:<46} {:>9.2} s",
        format!("virt-customize, same commands (median of {SLOW_RUNS})"),
        secs(disk_virt)
    );
    println!(
        "  {:<46} {:>9.1} x",
        "ratio virt-customize / bakehouse (kept base)",
        secs(disk_virt) / secs(disk_bake)
    );
    println!(
        "  {:<46} {:>9.1} x",
        "ratio virt-customize / bakehouse (first build)",
        secs(disk_virt) / secs(disk_first)
    );
    println!(
        "  {:<46} {:>9} MiB",
        "output qcow2 (kept base's clusters + the change)",
        out_size >> 20
    );
    println!(
        "  {:<46} {:>9} MiB",
        "peak scratch space, first build",
        peak_scratch >> 20
    );
    println!(
        "  {:<46} {:>9} MiB",
        "peak scratch space, kept base (kept base incl.)",
        peak_warm >> 20
    );
    println!(
        "  {:<46} {:>9} MiB",
        "  of which the kept base (tree + qcow2)",
        kept_base >> 20
    );
    println!(
        "  {:<46} {:>9.1} x / {:.2} x",
        "  first build relative to the output / the disk",
        peak_scratch as f64 / out_size as f64,
        peak_scratch as f64 / virtual_size as f64
    );
    let per = |d: Duration| secs(d) * 1000.0 / SANDBOX_RUNS as f64;
    println!("sandbox cost per command ({SANDBOX_RUNS} x /bin/true on the busybox tree)");
    println!(
        "  {:<46} {:>9.2} ms",
        "unshare + chroot (the previous sandbox)",
        per(old)
    );
    println!(
        "  {:<46} {:>9.2} ms",
        "bubblewrap: userns, seccomp, cgroup",
        per(new)
    );
    println!(
        "  {:<46} {:>9.2} x",
        "ratio bubblewrap / unshare + chroot",
        secs(new) / secs(old)
    );
}
