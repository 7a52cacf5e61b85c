//! `cargo xtask demo`: set-up, build, start the Go fixture, trace it, send it requests,
//! and show what the tracer printed.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{root, run, step};

#[derive(clap::Args)]
pub struct Options {
    /// How many requests to send to the fixture.
    #[arg(long, default_value_t = 10)]
    pub requests: u32,
}

pub fn main(opts: &Options) -> Result<()> {
    crate::setup::main(&crate::setup::Options::default())?;
    step("build: kraken-tracer (release)");
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--locked",
        "-p",
        "tracer-user",
    ]))?;
    let fixtures = crate::fixtures::build_all()?;
    let server = fixtures
        .iter()
        .find(|p| p.ends_with("httpserver"))
        .context("httpserver fixture")?;
    let mut fx = Command::new(server).stdout(Stdio::piped()).spawn()?;
    let mut line = String::new();
    BufReader::new(fx.stdout.take().context("fixture stdout")?).read_line(&mut line)?;
    let addr = line.trim().trim_start_matches("listening on ").to_owned();
    step(&format!(
        "demo: Go fixture pid {} listening on {addr}",
        fx.id()
    ));

    let mut tracer = Command::new(root().join("target/release/kraken-tracer"))
        .args(["attach", "--stdout", "--pid", &fx.id().to_string()])
        .stderr(Stdio::piped())
        .spawn()?;
    // Wait for the tracer to say it attached (its log goes to stderr, which we echo).
    let mut log = BufReader::new(tracer.stderr.take().context("tracer stderr")?);
    let mut attached = false;
    let mut l = String::new();
    while log.read_line(&mut l)? > 0 {
        eprint!("{l}");
        if l.contains("attached pid") {
            attached = true;
            break;
        }
        l.clear();
    }
    if !attached {
        let _ = fx.kill();
        bail!("the tracer did not attach (see its log above)");
    }
    let echo = thread::spawn(move || {
        for l in log.lines().map_while(Result::ok) {
            eprintln!("{l}");
        }
    });
    for i in 0..opts.requests {
        let path = ["/hello", "/status/404", "/deep?n=500"][i as usize % 3];
        let mut s = TcpStream::connect(&addr)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut sink = Vec::new();
        s.read_to_end(&mut sink)?;
        thread::sleep(Duration::from_millis(100));
    }
    // Stopping the fixture makes the tracer detach and exit on its own.
    let _ = fx.kill();
    let _ = fx.wait();
    let status = tracer.wait()?;
    let _ = echo.join();
    step(&format!("demo: tracer exited with {status}"));
    Ok(())
}
