//! Kernel features the tracer may use, detected once at start-up. Each gets one log line:
//! available, or which fallback is used instead.

use std::{fmt, fs, path::Path, process::Command};

use aya::Btf;
use aya_obj::btf::BtfKind;

/// What this kernel allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    pub btf: bool,
    pub tracefs: bool,
    pub uprobes: bool,
    pub kprobes: bool,
    pub fentry: Availability,
    /// Kernel lockdown mode ("none", "integrity", "confidentiality"), if readable.
    pub lockdown: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    Yes,
    No(String),
}

impl Features {
    /// `bpf_probe_write_user` is refused under any lockdown mode but "none".
    pub fn probe_write_user(&self) -> bool {
        matches!(self.lockdown.as_deref(), Some("none"))
    }

    pub fn detect() -> Features {
        Features {
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            tracefs: ensure_tracefs(),
            uprobes: pmu_exists("uprobe"),
            kprobes: pmu_exists("kprobe"),
            fentry: fentry_loads(),
            lockdown: lockdown(),
        }
    }

    /// One line per feature, for the start-up log.
    pub fn report(&self) -> Vec<String> {
        let yes_no = |b: bool| if b { "available" } else { "missing" };
        vec![
            format!("feature btf: {}", yes_no(self.btf)),
            format!(
                "feature tracefs: {}",
                if self.tracefs {
                    "mounted"
                } else {
                    "missing (tracepoint probes disabled)"
                }
            ),
            format!(
                "feature uprobes: {}",
                if self.uprobes {
                    "available"
                } else {
                    "missing (cannot trace Go functions)"
                }
            ),
            format!(
                "feature kprobes: {}",
                if self.kprobes {
                    "available"
                } else {
                    "missing (fallback: syscall tracepoints and tp_btf)"
                }
            ),
            match &self.fentry {
                Availability::Yes => "feature fentry: available".to_owned(),
                Availability::No(why) => {
                    format!("feature fentry: unavailable ({why}); fallback: tracepoints")
                }
            },
            format!(
                "feature bpf_probe_write_user: {} (lockdown: {})",
                if self.probe_write_user() {
                    "available (not used unless opted in)"
                } else {
                    "blocked; fallback: no writes into traced processes"
                },
                self.lockdown.as_deref().unwrap_or("unknown")
            ),
        ]
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.report().join("\n"))
    }
}

fn pmu_exists(name: &str) -> bool {
    Path::new("/sys/bus/event_source/devices")
        .join(name)
        .join("type")
        .exists()
}

fn mounted(fstype: &str) -> bool {
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(fstype))
}

/// Mounts tracefs at /sys/kernel/tracing when it is not mounted (needs root).
fn ensure_tracefs() -> bool {
    if mounted("tracefs") {
        return true;
    }
    let ok = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        log::info!("mounted tracefs at /sys/kernel/tracing");
    }
    ok && mounted("tracefs")
}

/// The active lockdown mode: the bracketed word of /sys/kernel/security/lockdown.
fn lockdown() -> Option<String> {
    let path = "/sys/kernel/security/lockdown";
    if !Path::new(path).exists() && !mounted("securityfs") {
        let _ = Command::new("mount")
            .args(["-t", "securityfs", "securityfs", "/sys/kernel/security"])
            .status();
    }
    parse_lockdown(&fs::read_to_string(path).ok()?)
}

fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_owned())
}

/// Tries to load a two-instruction fentry program (`r0 = 0; exit`) on a kernel function.
/// Loading is the only honest test: some kernels have the program type but refuse it.
fn fentry_loads() -> Availability {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    let btf = match Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => return Availability::No(format!("no kernel BTF: {e}")),
    };
    let Some(btf_id) = ["do_nanosleep", "vfs_read", "ksys_read"]
        .iter()
        .find_map(|f| btf.id_by_type_name_kind(f, BtfKind::Func).ok())
    else {
        return Availability::No("no known kernel function in BTF".to_owned());
    };
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]), // mov64 r0, 0
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]), // exit
    ];
    let license = c"GPL";
    let mut attr = [0u8; 120];
    let put32 =
        |a: &mut [u8; 120], at: usize, v: u32| a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 =
        |a: &mut [u8; 120], at: usize, v: u64| a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, BPF_PROG_TYPE_TRACING);
    put32(&mut attr, 4, 2);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 68, BPF_TRACE_FENTRY);
    put32(&mut attr, 108, btf_id);
    // SAFETY: attr is a valid bpf_attr for BPF_PROG_LOAD; insns and license outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if fd >= 0 {
        // SAFETY: fd was just returned by the kernel and is owned here.
        unsafe { libc::close(fd as i32) };
        Availability::Yes
    } else {
        Availability::No(format!("load refused: {}", std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_mode_is_the_bracketed_word() {
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("[none] integrity").as_deref(), Some("none"));
        assert_eq!(parse_lockdown("garbage"), None);
    }

    #[test]
    fn write_user_follows_lockdown() {
        let mut f = Features {
            btf: true,
            tracefs: true,
            uprobes: true,
            kprobes: false,
            fentry: Availability::Yes,
            lockdown: Some("integrity".into()),
        };
        assert!(!f.probe_write_user());
        f.lockdown = Some("none".into());
        assert!(f.probe_write_user());
        f.lockdown = None;
        assert!(
            !f.probe_write_user(),
            "unknown lockdown must be treated as blocked"
        );
        assert_eq!(f.report().len(), 6);
    }
}
