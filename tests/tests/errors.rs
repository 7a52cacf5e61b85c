//! Bad input gets one clear line and a non-zero exit, never a panic.

use std::process::{Command, Output};

use tracer_it::{Fixture, fixture, tracer_bin};

fn tracer(args: &[&str]) -> Output {
    Command::new(tracer_bin())
        .args(args)
        .output()
        .expect("run kraken-tracer")
}

fn assert_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("kraken-tracer: error:"))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"));
    assert!(
        line.contains(needle),
        "error line {line:?} lacks {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
}

#[test]
fn no_such_pid() {
    // PIDs above pid_max never exist.
    assert_error(
        &tracer(&["attach", "--pid", "99999999"]),
        "no such process: pid 99999999",
    );
}

#[test]
fn not_a_go_binary() {
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let out = tracer(&["attach", "--pid", &pid]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_error(&out, "is not a Go executable");
}

#[test]
fn not_an_elf() {
    let path = std::env::temp_dir().join("kraken-tracer-not-elf.txt");
    std::fs::write(&path, "just text\n").unwrap();
    assert_error(&tracer(&["inspect", path.to_str().unwrap()]), "not an ELF");
}

#[test]
fn symbol_not_found() {
    let fx = Fixture::plain(&fixture("nohttp", false)).unwrap();
    assert_error(
        &tracer(&["attach", "--pid", &fx.pid.to_string()]),
        "net/http.serverHandler.ServeHTTP",
    );
}

#[test]
fn permission_denied_without_privileges() {
    let fx = Fixture::http(&fixture("httpserver", false)).unwrap();
    // setpriv drops to nobody with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(tracer_bin())
        .args(["attach", "--pid", &fx.pid.to_string()])
        .output()
        .expect("setpriv");
    assert_error(&out, "ermission denied");
}

/// The eBPF object with the first instruction of `program` turned into `r0 = r5` (r5 is
/// uninitialised at entry, which every verifier rejects).
fn object_breaking(program: &str) -> Vec<u8> {
    use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
    let obj = kraken_tracer::EBPF_OBJECT;
    let file = object::File::parse(obj).unwrap();
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(program))
        .unwrap_or_else(|| panic!("no symbol for program {program}"));
    let section = file
        .section_by_index(symbol.section_index().expect("its section"))
        .unwrap();
    let (section_start, _) = section.file_range().unwrap();
    let start = usize::try_from(section_start + symbol.address()).unwrap();
    let mut bad = obj.to_vec();
    bad[start..start + 8].copy_from_slice(&[0xbf, 0x50, 0, 0, 0, 0, 0, 0]);
    bad
}

#[test]
fn a_refused_client_program_is_replaced_by_its_stand_in() {
    // What Debian 12's 6.1 verifier does to http_client (tests/tests/qemu_kernels.rs), forced.
    let dir = std::env::temp_dir().join("kraken-tracer-verifier-fallback-test");
    std::fs::create_dir_all(&dir).unwrap();
    let tracer = kraken_tracer::tracer::Tracer::load_object(&object_breaking("http_client"), &dir)
        .expect("the stand-in loads");
    let subs = tracer.substitutes();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(
        (subs[0].program, subs[0].instead),
        ("http_client", "http_client_basic")
    );
    let log = std::fs::read_to_string(&subs[0].log_path).unwrap();
    assert!(log.contains("R5"), "verifier log lacks the reason: {log}");
    // The full programs load on this kernel: nothing is replaced.
    let tracer = kraken_tracer::tracer::Tracer::load_object(kraken_tracer::EBPF_OBJECT, &dir)
        .expect("the real object loads");
    assert!(tracer.substitutes().is_empty());
}

#[test]
fn verifier_rejection_saves_the_log() {
    // http_serve has no stand-in: its rejection stops the tracer.
    let bad = object_breaking("http_serve");
    let dir = std::env::temp_dir().join("kraken-tracer-verifier-test");
    std::fs::create_dir_all(&dir).unwrap();
    let err = match kraken_tracer::tracer::Tracer::load_object(&bad, &dir) {
        Ok(_) => panic!("a broken program loaded"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("verifier rejected"), "{msg}");
    let log = std::fs::read_to_string(dir.join("http_serve.verifier.log")).unwrap();
    assert!(log.contains("R5"), "verifier log lacks the reason: {log}");
}
