//! `cargo xtask setup`: installs, idempotently, what the build and the tests need on a fresh machine
//! (see shared/notes/toolchain.md for why each step is done this way).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{apt_install, output, run, step, succeeds};

const BPF_LINKER_VERSION: &str = "0.13.0";
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only check; install nothing.
    #[arg(long)]
    pub check: bool,
    /// Exercise the Debian fallback for rust-src alone: unpack Debian's matching rust-src
    /// library into DIR instead of the sysroot (to verify the fallback on a machine where
    /// rustup works).
    #[arg(long, value_name = "DIR")]
    pub debian_rust_src_into: Option<PathBuf>,
}

pub fn main(opts: &Options) -> Result<()> {
    if let Some(dir) = &opts.debian_rust_src_into {
        return rust_src_from_debian(&dir.join("library"));
    }
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?);
    rust_src(&sysroot, opts.check)?;
    bpf_linker(&sysroot, opts.check)?;
    tracefs(opts.check)?;
    go()?;
    crate::jaeger::install(opts.check)?;
    crate::kraken::install(opts.check)?;
    crate::fixtures::apt_packages(opts.check)?;
    bench_packages(opts.check)?;
    crate::cross::setup(opts.check)?;
    crate::deploy::install(opts.check)?;
    crate::qemu::install(opts.check)?;
    step("setup complete");
    Ok(())
}

/// Debian packages `cargo xtask bench` needs, each with a file that shows it is installed:
/// the plots' font, and clang + llvm-strip + libbpf headers to generate the eBPF objects of
/// the OpenTelemetry Go auto-instrumentation (the peer, built with bpf2go).
const BENCH_APT_PACKAGES: &[(&str, &str)] = &[
    (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "fonts-dejavu-core",
    ),
    ("/usr/bin/clang", "clang"),
    ("/usr/bin/llvm-strip", "llvm"),
    ("/usr/include/bpf/bpf_helpers.h", "libbpf-dev"),
];

fn bench_packages(check: bool) -> Result<()> {
    let missing: Vec<&str> = BENCH_APT_PACKAGES
        .iter()
        .filter(|(file, _)| !Path::new(file).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install("bench apt packages", &missing, check)
}

fn rustc_version() -> Result<String> {
    // "rustc 1.95.0 (59807616e 2026-04-14)" -> "1.95.0"
    let v = output(Command::new("rustc").arg("--version"))?;
    v.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .context("cannot parse `rustc --version`")
}

fn rust_src(sysroot: &Path, check: bool) -> Result<()> {
    let lib = sysroot.join("lib/rustlib/src/rust/library");
    if lib.join("core/src/lib.rs").exists() {
        step(&format!("rust-src: present at {}", lib.display()));
        return Ok(());
    }
    if check {
        bail!("missing piece: rust-src (run `cargo xtask setup`)");
    }
    step("rust-src: installing with rustup");
    if succeeds(Command::new("rustup").args(["component", "add", "rust-src"])) && lib.exists() {
        step("rust-src: installed by rustup");
        return Ok(());
    }
    step("rust-src: rustup failed, falling back to Debian's matching rust-src package");
    rust_src_from_debian(&lib)
}

/// Unpacks the `library` folder of Debian's rust-src package matching the installed rustc
/// into `lib`, with a private apt state (the system's apt configuration is left alone).
fn rust_src_from_debian(lib: &Path) -> Result<()> {
    let version = rustc_version()?;
    let work = env::temp_dir().join("kraken-tracer-apt");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("lists/partial"))?;
    fs::create_dir_all(work.join("cache/archives/partial"))?;
    fs::write(
        work.join("sources.list"),
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {DEBIAN_MIRROR} trixie-backports main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {DEBIAN_MIRROR} sid main\n"
        ),
    )?;
    let private = |c: &mut Command| {
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
            .arg(format!("Dir::Cache={}", work.join("cache").display()));
    };
    let mut update = Command::new("apt-get");
    private(&mut update);
    run(update.args(["-q", "update"]))?;
    let mut madison = Command::new("apt-cache");
    private(&mut madison);
    let listing = output(madison.args(["madison", "rust-src"]))?;
    let deb_version = listing
        .lines()
        .filter_map(|l| l.split('|').nth(1).map(str::trim))
        .find(|v| v.starts_with(&format!("{version}+")))
        .with_context(|| {
            format!("missing piece: no Debian rust-src package matches rustc {version}")
        })?
        .to_owned();
    let mut download = Command::new("apt-get");
    private(&mut download);
    run(download
        .current_dir(&work)
        .args(["-q", "download"])
        .arg(format!("rust-src={deb_version}")))?;
    let deb = fs::read_dir(&work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download produced no .deb")?;
    let unpack = work.join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpack))?;
    let src = unpack.join(format!("usr/src/rustc-{version}/library"));
    fs::create_dir_all(lib.parent().context("sysroot path")?)?;
    run(Command::new("cp").arg("-a").arg(&src).arg(lib))?;
    step(&format!("rust-src: installed from Debian {deb_version}"));
    Ok(())
}

/// Where bpf-linker and the libLLVM link farm live: `$CARGO_HOME` (its bin/ is on PATH).
fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    )
}

fn bpf_linker(sysroot: &Path, check: bool) -> Result<()> {
    let home = cargo_home();
    let bin = home.join("bin/bpf-linker");
    if let Ok(v) = output(Command::new(&bin).arg("--version"))
        && v.contains(BPF_LINKER_VERSION)
    {
        step(&format!("bpf-linker: {v} at {}", bin.display()));
        return Ok(());
    }
    if check {
        bail!("missing piece: bpf-linker {BPF_LINKER_VERSION} (run `cargo xtask setup`)");
    }
    // rustc ships its LLVM as lib/libLLVM.so.<major>.<minor>-rust-<ver>-<channel>; the
    // lib/libLLVM-<major>-rust-*.so next to it is only a linker script.
    let libdir = sysroot.join("lib");
    let real = fs::read_dir(&libdir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        .with_context(|| {
            format!(
                "missing piece: rustc's libLLVM.so.* in {}",
                libdir.display()
            )
        })?;
    let major = real
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .context("cannot read LLVM major version")?
        .to_owned();
    let prefix = home.join("kraken-tracer-llvm");
    let plib = prefix.join("lib");
    fs::create_dir_all(&plib)?;
    for (link, target) in [
        (plib.join(&real), libdir.join(&real)),
        (plib.join("libLLVM.so"), PathBuf::from(&real)),
    ] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("symlink {}", link.display()))?;
    }
    step(&format!(
        "bpf-linker: building {BPF_LINKER_VERSION} against rustc's {real} (LLVM {major}, ~1 min)"
    ));
    run(Command::new("cargo")
        .env("LLVM_PREFIX", &prefix)
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .arg("--root")
        .arg(&home))
    .context("missing piece: bpf-linker could not be built")?;
    let v = output(Command::new(&bin).arg("--version"))
        .context("bpf-linker was installed but does not run")?;
    step(&format!("bpf-linker: installed {v}"));
    Ok(())
}

fn tracefs(check: bool) -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("tracefs"))
    {
        step("tracefs: mounted");
        return Ok(());
    }
    if check {
        bail!("missing piece: tracefs is not mounted (run `cargo xtask setup` as root)");
    }
    run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
        .context("missing piece: cannot mount tracefs at /sys/kernel/tracing (need root)")?;
    step("tracefs: mounted at /sys/kernel/tracing");
    Ok(())
}

fn go() -> Result<()> {
    let v = output(Command::new("go").arg("version"))
        .context("missing piece: Go toolchain (`go` not on PATH); install Go >= 1.21")?;
    step(&format!("go: {v}"));
    Ok(())
}
