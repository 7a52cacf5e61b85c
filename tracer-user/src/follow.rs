//! `--follow-exe PATH` and `--follow-name NAME`: the processes that run a given executable, at
//! start and as they appear (Kraken restarts, upgrades, containers).
//!
//! **By name.** `--follow-name kraken-agent` matches a process whose executable's file name
//! (the last component of `/proc/PID/exe`'s target, as the process sees it) is exactly NAME.
//! Nothing has to exist at start: this is what a DaemonSet uses, where Kraken's binaries live
//! only in Kraken's containers and start after the tracer. A name can match an unrelated
//! program of the same name; a path (below) cannot.
//!
//! **Which file is "the executable".** A file is identified by its inode number, size and
//! modification time ([`ExeId`], from stat(2)); a process by the same triple of the file it runs,
//! from stat(2) of `/proc/PID/exe` (the kernel follows that link to the file itself, in whatever
//! mount namespace the process lives, so a container's process matches PATH given as
//! `/proc/PID/root/usr/bin/kraken-agent` or as the image layer's host path).
//!
//! The device number is deliberately *not* part of the identity: overlayfs gives every mount its
//! own `st_dev` while keeping the lower file's `st_ino`, so the same image file seen through a
//! restarted container's new overlay mount has a new device but the same inode, size and mtime.
//! Two different files would need the same inode number on two file systems *and* the same size
//! and nanosecond mtime to be confused.
//!
//! PATH is stat'ed again on every scan: when an upgrade replaces the file (a new inode behind the
//! same path), the new file is followed too, and processes still running the old one keep
//! matching the identity they had. A PATH that stops resolving (its container exited) keeps the
//! identities already learned.
//!
//! **Cost.** A scan lists `/proc` and stats `/proc/PID/exe` only for PIDs it has not looked at
//! yet, and again on the next [`RECHECKS`] scans (so a process caught between fork and exec is
//! looked at once it has exec'd); PIDs gone from `/proc` are forgotten.

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// How many scans after the first a non-matching PID is looked at again (fork then exec).
pub const RECHECKS: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("--follow-exe {}: {source}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--follow-exe {}: not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "--follow-name {name:?}: a file name is expected (no '/'; use --follow-exe for a path)"
    )]
    BadName { name: String },
    #[error("cannot list {}: {source}", path.display())]
    Proc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The identity of an executable file (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExeId {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl ExeId {
    pub fn from_metadata(m: &fs::Metadata) -> ExeId {
        ExeId {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }

    /// stat(2) of `path`, following symbolic links (and `/proc/PID/exe`).
    pub fn of(path: &Path) -> io::Result<ExeId> {
        fs::metadata(path).map(|m| ExeId::from_metadata(&m))
    }
}

/// One `--follow-exe` path and every identity it has had.
#[derive(Debug)]
struct Followed {
    path: PathBuf,
    ids: Vec<ExeId>,
}

/// A process found running a followed executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// What it matched: the `--follow-exe` path, or `name NAME` for a `--follow-name`.
    pub matched: String,
}

/// The file name of the executable behind a `/proc/PID/exe` link, as the process sees it
/// (without the ` (deleted)` the kernel appends once the file was replaced or removed).
pub fn exe_name(link: &Path) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    let name = target.file_name()?.to_str()?;
    Some(name.strip_suffix(" (deleted)").unwrap_or(name).to_owned())
}

/// Scans `/proc` for processes running the followed executables.
#[derive(Debug)]
pub struct Follower {
    followed: Vec<Followed>,
    names: Vec<String>,
    /// PIDs looked at, with how many more scans should look at them again.
    seen: HashMap<u32, u8>,
    proc_root: PathBuf,
    own_pid: u32,
}

impl Follower {
    /// Follows `paths` (each must name an existing regular file now) and executables named
    /// `names`.
    pub fn new(paths: &[PathBuf], names: &[String]) -> Result<Follower, FollowError> {
        Self::with_proc_root(paths, names, Path::new("/proc"))
    }

    /// [`Follower::new`] with another procfs mount (tests).
    pub fn with_proc_root(
        paths: &[PathBuf],
        names: &[String],
        proc_root: &Path,
    ) -> Result<Follower, FollowError> {
        for name in names {
            if name.is_empty() || name.contains('/') {
                return Err(FollowError::BadName { name: name.clone() });
            }
        }
        let mut followed: Vec<Followed> = Vec::new();
        for path in paths {
            let m = fs::metadata(path).map_err(|source| FollowError::Stat {
                path: path.clone(),
                source,
            })?;
            if !m.is_file() {
                return Err(FollowError::NotAFile { path: path.clone() });
            }
            if followed.iter().any(|f| &f.path == path) {
                continue;
            }
            followed.push(Followed {
                path: path.clone(),
                ids: vec![ExeId::from_metadata(&m)],
            });
        }
        let mut unique: Vec<String> = Vec::new();
        for n in names {
            if !unique.contains(n) {
                unique.push(n.clone());
            }
        }
        Ok(Follower {
            followed,
            names: unique,
            seen: HashMap::new(),
            proc_root: proc_root.to_owned(),
            own_pid: std::process::id(),
        })
    }

    /// What is followed, for logs: each path, then `name NAME` for each name.
    pub fn describe(&self) -> String {
        self.followed
            .iter()
            .map(|f| f.path.display().to_string())
            .chain(self.names.iter().map(|n| format!("name {n}")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Which followed path a file with identity `id` is, if any.
    pub fn matching(&self, id: &ExeId) -> Option<&Path> {
        self.followed
            .iter()
            .find(|f| f.ids.contains(id))
            .map(|f| f.path.as_path())
    }

    /// Forgets `pid` (it exited): a new process that gets the same PID is looked at.
    pub fn forget(&mut self, pid: u32) {
        self.seen.remove(&pid);
    }

    /// Stats every followed path again and learns a new identity (an upgraded file).
    fn refresh(&mut self) {
        for f in &mut self.followed {
            match ExeId::of(&f.path) {
                Ok(id) if !f.ids.contains(&id) => {
                    log::info!(
                        "following {}: the file was replaced (inode {}); following the new one too",
                        f.path.display(),
                        id.ino
                    );
                    f.ids.push(id);
                }
                Ok(_) => {}
                Err(e) => log::debug!("following {}: {e}", f.path.display()),
            }
        }
    }

    /// Lists the processes not seen before (or due for a second look) that run a followed
    /// executable and for which `skip` is false (e.g. already attached). Each is reported once.
    pub fn scan(&mut self, skip: impl Fn(u32) -> bool) -> Result<Vec<Found>, FollowError> {
        self.refresh();
        let dir = fs::read_dir(&self.proc_root).map_err(|source| FollowError::Proc {
            path: self.proc_root.clone(),
            source,
        })?;
        let mut seen = HashMap::with_capacity(self.seen.len() + 16);
        let mut found = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let remaining = match self.seen.get(&pid) {
                None => RECHECKS,
                Some(0) => {
                    seen.insert(pid, 0);
                    continue;
                }
                Some(n) => n - 1,
            };
            if pid == self.own_pid || skip(pid) {
                seen.insert(pid, 0);
                continue;
            }
            // Kernel threads and processes we may not inspect have no readable exe: look again
            // on the next scans only while `remaining` lasts.
            let exe = self.proc_root.join(pid.to_string()).join("exe");
            let by_path = || {
                let id = ExeId::of(&exe).ok()?;
                self.matching(&id).map(|p| p.display().to_string())
            };
            let by_name = || {
                if self.names.is_empty() {
                    return None;
                }
                let name = exe_name(&exe)?;
                self.names.contains(&name).then(|| format!("name {name}"))
            };
            match by_path().or_else(by_name) {
                Some(matched) => {
                    seen.insert(pid, 0);
                    found.push(Found { pid, matched });
                }
                None => {
                    seen.insert(pid, remaining);
                }
            }
        }
        self.seen = seen;
        found.sort_by_key(|f| f.pid);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        os::unix::fs::symlink,
        sync::atomic::{AtomicU32, Ordering},
    };

    use super::*;

    /// A fake procfs: `<root>/<pid>/exe` symbolic links to files.
    struct FakeProc {
        root: PathBuf,
    }

    impl FakeProc {
        fn new() -> FakeProc {
            static N: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "kraken-tracer-follow-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("bin")).unwrap();
            FakeProc { root }
        }

        fn file(&self, name: &str, content: &[u8]) -> PathBuf {
            let p = self.root.join("bin").join(name);
            fs::write(&p, content).unwrap();
            p
        }

        fn proc(&self) -> PathBuf {
            self.root.join("proc")
        }

        fn spawn(&self, pid: u32, exe: &Path) {
            let dir = self.proc().join(pid.to_string());
            fs::create_dir_all(&dir).unwrap();
            let _ = fs::remove_file(dir.join("exe"));
            symlink(exe, dir.join("exe")).unwrap();
        }

        fn exit(&self, pid: u32) {
            fs::remove_dir_all(self.proc().join(pid.to_string())).unwrap();
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn pids(found: &[Found]) -> Vec<u32> {
        found.iter().map(|f| f.pid).collect()
    }

    #[test]
    fn finds_new_processes_once_and_skips_attached_ones() {
        let fp = FakeProc::new();
        let kraken = fp.file("kraken", b"kraken");
        let other = fp.file("other", b"other");
        fs::create_dir_all(fp.proc().join("self")).unwrap(); // not a PID: ignored
        fp.spawn(10, &kraken);
        fp.spawn(11, &other);
        fp.spawn(12, &kraken);
        let mut f =
            Follower::with_proc_root(std::slice::from_ref(&kraken), &[], &fp.proc()).unwrap();
        let found = f.scan(|pid| pid == 12).unwrap();
        assert_eq!(pids(&found), vec![10]);
        assert_eq!(found[0].matched, kraken.display().to_string());
        // Reported once.
        assert!(f.scan(|_| false).unwrap().is_empty());
        fp.spawn(13, &kraken);
        assert_eq!(pids(&f.scan(|_| false).unwrap()), vec![13]);
        // 10 exits and its PID comes back running kraken again.
        fp.exit(10);
        f.forget(10);
        fp.spawn(10, &kraken);
        assert_eq!(pids(&f.scan(|_| false).unwrap()), vec![10]);
    }

    #[test]
    fn a_process_that_execs_after_the_first_look_is_found() {
        let fp = FakeProc::new();
        let kraken = fp.file("kraken", b"kraken");
        let shell = fp.file("sh", b"shell");
        let mut f =
            Follower::with_proc_root(std::slice::from_ref(&kraken), &[], &fp.proc()).unwrap();
        fp.spawn(20, &shell); // forked, not exec'd yet
        assert!(f.scan(|_| false).unwrap().is_empty());
        fp.spawn(20, &kraken); // exec
        assert_eq!(pids(&f.scan(|_| false).unwrap()), vec![20]);
        // A process that never matches is looked at RECHECKS more times, then no more.
        fp.spawn(21, &shell);
        for _ in 0..=RECHECKS {
            assert!(f.scan(|_| false).unwrap().is_empty());
        }
        fp.spawn(21, &kraken);
        assert!(f.scan(|_| false).unwrap().is_empty(), "looked at again");
    }

    #[test]
    fn a_replaced_file_is_followed_and_the_old_one_still_matches() {
        let fp = FakeProc::new();
        let kraken = fp.file("kraken", b"kraken v1");
        let mut f =
            Follower::with_proc_root(std::slice::from_ref(&kraken), &[], &fp.proc()).unwrap();
        // Keep the old file alive under another name (a running process holds it).
        let old = fp.root.join("bin/kraken.old");
        fs::rename(&kraken, &old).unwrap();
        fp.file("kraken.new", b"kraken v2, bigger");
        fs::rename(fp.root.join("bin/kraken.new"), &kraken).unwrap();
        fp.spawn(30, &old);
        fp.spawn(31, &kraken);
        assert_eq!(pids(&f.scan(|_| false).unwrap()), vec![30, 31]);
    }

    #[test]
    fn identity_ignores_the_path_but_not_the_content() {
        let fp = FakeProc::new();
        let kraken = fp.file("kraken", b"kraken");
        let link = fp.root.join("bin/link");
        symlink(&kraken, &link).unwrap();
        // The same file through a symbolic link (like /proc/PID/root/...) matches.
        assert_eq!(ExeId::of(&link).unwrap(), ExeId::of(&kraken).unwrap());
        let copy = fp.file("copy", b"kraken");
        assert_ne!(ExeId::of(&copy).unwrap(), ExeId::of(&kraken).unwrap());
        let f = Follower::with_proc_root(std::slice::from_ref(&link), &[], &fp.proc()).unwrap();
        assert!(f.matching(&ExeId::of(&kraken).unwrap()).is_some());
        assert!(f.matching(&ExeId::of(&copy).unwrap()).is_none());
    }

    #[test]
    fn bad_paths_are_clear_errors() {
        let fp = FakeProc::new();
        let err = Follower::new(&[fp.root.join("missing")], &[]).unwrap_err();
        assert!(err.to_string().starts_with("--follow-exe "), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        let err = Follower::new(&[fp.root.join("bin")], &[]).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn names_match_the_file_name_only_and_need_no_file_at_start() {
        let fp = FakeProc::new();
        let names = ["kraken-agent".to_owned()];
        fs::create_dir_all(fp.proc()).unwrap();
        let mut f = Follower::with_proc_root(&[], &names, &fp.proc()).unwrap();
        assert_eq!(f.describe(), "name kraken-agent");
        assert!(f.scan(|_| false).unwrap().is_empty());
        let agent = fp.file("kraken-agent", b"agent");
        let origin = fp.file("kraken-origin", b"origin");
        let prefixed = fp.file("kraken-agent-helper", b"helper");
        fp.spawn(40, &agent);
        fp.spawn(41, &origin);
        fp.spawn(42, &prefixed);
        let found = f.scan(|_| false).unwrap();
        assert_eq!(pids(&found), vec![40]);
        assert_eq!(found[0].matched, "name kraken-agent");
        // A replaced binary still matches by name (the kernel marks the old file "(deleted)").
        let dir = fp.proc().join("43");
        fs::create_dir_all(&dir).unwrap();
        symlink(fp.root.join("bin/kraken-agent (deleted)"), dir.join("exe")).unwrap();
        assert_eq!(pids(&f.scan(|_| false).unwrap()), vec![43]);
    }

    #[test]
    fn names_with_a_slash_or_empty_are_refused() {
        for bad in ["", "/usr/bin/kraken-agent", "bin/x"] {
            let err = Follower::new(&[], &[bad.to_owned()]).unwrap_err();
            assert!(err.to_string().starts_with("--follow-name "), "{err}");
        }
    }

    #[test]
    fn real_proc_finds_a_child_and_never_this_process() {
        let sleep = PathBuf::from("/bin/sleep");
        if !sleep.exists() {
            return;
        }
        let mut child = std::process::Command::new(&sleep)
            .arg("30")
            .spawn()
            .unwrap();
        let mut f = Follower::new(std::slice::from_ref(&sleep), &[]).unwrap();
        let found = f.scan(|_| false);
        let _ = child.kill();
        let _ = child.wait();
        let found = found.unwrap();
        assert!(found.iter().any(|x| x.pid == child.id()), "{found:?}");
        assert!(found.iter().all(|x| x.pid != std::process::id()));
    }
}
