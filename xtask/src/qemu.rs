//! `cargo xtask qemu --arch x86_64|aarch64`: runs the real tracer on a Debian kernel in qemu
//! (kprobes available there, unlike on this machine), against the Go fixture built for that
//! architecture, and prints what the guest reported. The guest itself (initramfs, `/init`,
//! boot, console parsing) is in `qemu/guest.rs`, shared with the integration tests.
//!
//! `install` (called by `cargo xtask setup`) installs qemu and the arm64 runtime libraries,
//! and downloads Debian bookworm's kernel and busybox-static for amd64 and arm64 into the
//! cache, with a private apt state: the system's apt configuration is left alone.

pub mod guest;

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use guest::{Arch, Assets, Scenario};

use crate::util::{apt_install, output, root, run, step};

/// Debian bookworm's kernel ABI and package version used (both flavours). Security updates
/// remove superseded ABIs from the archive: when this one is gone, the set-up resolves
/// `linux-image-<arch>`'s current dependency instead and says so.
const KERNEL_ABI: &str = "6.1.0-56";
const KERNEL_VERSION: &str = "6.1.192-2";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";
const DEBIAN_SECURITY: &str = "http://deb.debian.org/debian-security";

/// Host packages: the emulators, and the arm64 loader, libc and libgcc_s the arm64 tracer
/// needs in its guest (each with a file that shows it is installed).
const APT_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ("/usr/bin/qemu-system-aarch64", "qemu-system-arm"),
    (
        "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1",
        "libc6-arm64-cross",
    ),
    (
        "/usr/aarch64-linux-gnu/lib/libgcc_s.so.1",
        "libgcc-s1-arm64-cross",
    ),
    ("/usr/bin/readelf", "binutils"),
];

/// Kernel options the scenario relies on, checked in the package's /boot/config-*.
const KERNEL_CONFIG: &[&str] = &[
    "CONFIG_KPROBES=y",
    "CONFIG_KPROBE_EVENTS=y",
    "CONFIG_UPROBE_EVENTS=y",
    "CONFIG_BPF_EVENTS=y",
    "CONFIG_BPF_SYSCALL=y",
    "CONFIG_DEBUG_INFO_BTF=y",
    "CONFIG_BLK_DEV_INITRD=y",
    "CONFIG_DEVTMPFS=y",
];

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ArchArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl From<ArchArg> for Arch {
    fn from(a: ArchArg) -> Arch {
        match a {
            ArchArg::X86_64 => Arch::X86_64,
            ArchArg::Aarch64 => Arch::Aarch64,
        }
    }
}

#[derive(clap::Args)]
pub struct Options {
    /// Guest architecture.
    #[arg(long, value_enum, default_value = "x86_64")]
    pub arch: ArchArg,
    /// The kraken-tracer binary for the guest (default: built here, target/release/kraken-tracer
    /// for x86_64, target/aarch64-unknown-linux-gnu/release/kraken-tracer for aarch64).
    #[arg(long)]
    pub tracer: Option<PathBuf>,
    /// The static Go fixture for the guest (default: built here, target/fixtures/httpserver
    /// for x86_64, target/fixtures/arm64/httpserver for aarch64).
    #[arg(long)]
    pub fixture: Option<PathBuf>,
    /// Software emulation even where KVM would work.
    #[arg(long)]
    pub tcg: bool,
    /// Wall-clock limit for the guest in seconds (default 300 for x86_64, 600 for aarch64).
    #[arg(long)]
    pub timeout: Option<u64>,
}

pub fn main(opts: &Options) -> Result<()> {
    let arch = Arch::from(opts.arch);
    let assets = Assets::cached(arch)?;
    let (tracer, fixture) = match (&opts.tracer, &opts.fixture) {
        (Some(t), Some(f)) => (t.clone(), f.clone()),
        _ => {
            let (t, f) = artifacts(arch)?;
            (
                opts.tracer.clone().unwrap_or(t),
                opts.fixture.clone().unwrap_or(f),
            )
        }
    };
    let accel = if opts.tcg {
        guest::Accel::Tcg("--tcg".to_owned())
    } else {
        guest::detect_accel(arch)
    };
    step(&format!(
        "qemu: {arch} guest, kernel {} ({}), {accel}",
        assets.release, assets.package
    ));
    let sc = Scenario {
        arch,
        assets,
        tracer,
        fixture,
        work_dir: root().join("target/qemu").join(arch.uname_m()),
        accel,
        timeout: opts
            .timeout
            .map_or_else(|| arch.default_timeout(), Duration::from_secs),
    };
    let report = guest::run(&sc)?;
    print!("{}", report.summary());
    if report.tracer_exit != Some(0) {
        bail!("the tracer did not exit cleanly in the guest (see the console above)");
    }
    if report.trace_count() < guest::REQUESTS.len() {
        bail!(
            "{} traces for {} requests",
            report.trace_count(),
            guest::REQUESTS.len()
        );
    }
    Ok(())
}

/// Builds the tracer and fixture of `arch` (aarch64: `cargo xtask cross`).
fn artifacts(arch: Arch) -> Result<(PathBuf, PathBuf)> {
    let (tracer, fixture) = match arch {
        Arch::X86_64 => {
            crate::util::build_release_tracer()?;
            crate::fixtures::build_all()?;
            (
                root().join("target/release/kraken-tracer"),
                root().join("target/fixtures/httpserver"),
            )
        }
        Arch::Aarch64 => {
            crate::cross::main()?;
            (
                root().join(format!(
                    "target/{}/release/kraken-tracer",
                    crate::cross::TARGET
                )),
                root().join("target/fixtures/arm64/httpserver"),
            )
        }
    };
    for p in [&tracer, &fixture] {
        if !p.exists() {
            bail!("the build did not produce {}", p.display());
        }
    }
    Ok((tracer, fixture))
}

/// What `cargo xtask test` builds for the qemu integration tests: the release tracer the
/// x86_64 guest runs (the debug one is ~150 MB) and the arm64 tracer and fixture.
pub fn prepare() -> Result<()> {
    crate::util::build_release_tracer()?;
    crate::cross::main()
}

/// `cargo xtask setup`'s part: host packages, and each architecture's kernel and busybox.
pub fn install(check: bool) -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install("qemu apt packages", &missing, check)?;
    for arch in [Arch::X86_64, Arch::Aarch64] {
        guest_assets(arch, check)?;
    }
    Ok(())
}

/// Downloads and unpacks the Debian kernel and busybox-static of `arch` into the cache.
fn guest_assets(arch: Arch, check: bool) -> Result<()> {
    if let Ok(a) = Assets::cached(arch) {
        step(&format!(
            "qemu {arch} guest: kernel {} ({}) and busybox present in {}",
            a.release,
            a.package,
            guest::assets_dir(arch).display()
        ));
        return Ok(());
    }
    if check {
        bail!("missing piece: the qemu {arch} guest kernel (run `cargo xtask setup`)");
    }
    let deb_arch = arch.debian();
    let work = env::temp_dir().join(format!("kraken-tracer-qemu-apt-{deb_arch}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("lists/partial"))?;
    fs::create_dir_all(work.join("cache/archives/partial"))?;
    fs::create_dir_all(work.join("debs"))?;
    fs::write(
        work.join("sources.list"),
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {DEBIAN_MIRROR} bookworm main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {DEBIAN_SECURITY} bookworm-security main\n"
        ),
    )?;
    let apt = |tool: &str| {
        let mut c = Command::new(tool);
        c.arg("-o")
            .arg(format!(
                "Dir::Etc::sourcelist={}",
                work.join("sources.list").display()
            ))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!(
                "Dir::State::Lists={}",
                work.join("lists").display()
            ))
            .arg("-o")
            .arg(format!("Dir::Cache={}", work.join("cache").display()))
            .arg("-o")
            .arg(format!("APT::Architecture={deb_arch}"))
            .arg("-o")
            .arg(format!("APT::Architectures={deb_arch}"))
            // Downloads land in a root-owned temp dir: no "unsandboxed" warning.
            .args(["-o", "APT::Sandbox::User=root"]);
        c
    };
    run(apt("apt-get").args(["-q", "update"]))?;
    let pinned = format!("linux-image-{KERNEL_ABI}-{deb_arch}");
    let available = output(apt("apt-cache").args(["madison", &pinned])).unwrap_or_default();
    let kernel = if available
        .lines()
        .any(|l| l.split('|').nth(1).map(str::trim) == Some(KERNEL_VERSION))
    {
        format!("{pinned}={KERNEL_VERSION}")
    } else {
        // `linux-image-<arch>` depends on the current ABI's package.
        let deps = output(apt("apt-cache").args(["depends", &format!("linux-image-{deb_arch}")]))?;
        let current = deps
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|p| p.starts_with("linux-image-"))
            .context("cannot resolve Debian's current kernel package")?
            .trim()
            .to_owned();
        step(&format!(
            "qemu {arch} guest: {pinned}={KERNEL_VERSION} is no longer in the archive; using {current}"
        ));
        current
    };
    run(apt("apt-get").current_dir(work.join("debs")).args([
        "-q",
        "download",
        &kernel,
        "busybox-static",
    ]))?;
    let debs: Vec<PathBuf> = fs::read_dir(work.join("debs"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    let unpack = work.join("unpacked");
    fs::create_dir_all(&unpack)?;
    let package = debs
        .iter()
        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .find(|n| n.starts_with("linux-image-"))
        .context("apt-get download produced no kernel package")?;
    for deb in &debs {
        // Only what the guest uses: /boot of the kernel (not its ~400 MB of modules),
        // /bin/busybox of busybox-static.
        let member = if deb.ends_with(&package) {
            "./boot"
        } else {
            "./bin/busybox"
        };
        run(Command::new("bash")
            .arg("-c")
            .arg(r#"set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" "$3""#)
            .arg("bash")
            .arg(deb)
            .arg(&unpack)
            .arg(member))?;
    }
    // linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb
    let mut parts = package.split('_');
    let (name, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let release = name
        .strip_prefix("linux-image-")
        .context("kernel package name")?
        .to_owned();
    let boot = unpack.join("boot");
    let config = fs::read_to_string(boot.join(format!("config-{release}")))
        .with_context(|| format!("no /boot/config-{release} in {package}"))?;
    let console = match arch {
        Arch::X86_64 => "CONFIG_SERIAL_8250_CONSOLE=y",
        Arch::Aarch64 => "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y",
    };
    let lacking: Vec<&str> = KERNEL_CONFIG
        .iter()
        .copied()
        .chain([console])
        .filter(|opt| !config.lines().any(|l| l == *opt))
        .collect();
    if !lacking.is_empty() {
        bail!("{package} lacks {lacking:?}: the qemu scenario cannot run on it");
    }
    let dir = guest::assets_dir(arch);
    fs::create_dir_all(&dir)?;
    for (from, to) in [
        (boot.join(format!("vmlinuz-{release}")), "vmlinuz"),
        (boot.join(format!("config-{release}")), "config"),
        (unpack.join("bin/busybox"), "busybox"),
    ] {
        fs::copy(&from, dir.join(to))
            .with_context(|| format!("copy {} to {}", from.display(), dir.display()))?;
    }
    fs::write(dir.join("release"), format!("{release}\n"))?;
    // Written last: `Assets::cached` treats its presence as "complete".
    fs::write(dir.join("package"), format!("{name}={version}\n"))?;
    let _ = fs::remove_dir_all(&work);
    step(&format!(
        "qemu {arch} guest: kernel {release} ({name}={version}) and busybox in {}",
        dir.display()
    ));
    Ok(())
}
