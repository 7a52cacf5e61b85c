//! Socket-probe cost per hit: one thread sends 1 byte over a loopback TCP connection and reads it
//! back from the other end, N times per round (one send and one receive hit per iteration), with:
//! no socket probes, the probes attached but this process not counted (the cost every process on
//! the node pays: a lookup miss), and this process counted (lookup hit, two atomic adds). Modes
//! are interleaved round by round; each round loads a fresh tracer (dropping one detaches it).
//!
//! Run (root): `cargo run --release -p tracer-it --example socket_cost [kprobe|tracepoint]`
//! (default: what `--socket-probes auto` would choose). Prints a Markdown table.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use kraken_tracer::{
    features::Features,
    socket::{Mode, Plan, SocketProbes, Support, choose},
    tracer::Tracer,
};

const ITERATIONS: u32 = 200_000;
const ROUNDS: usize = 7;

/// Nanoseconds per iteration (one 1-byte send, one 1-byte receive).
fn round(a: &mut TcpStream, b: &mut TcpStream) -> Result<f64> {
    let mut buf = [0u8; 1];
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        a.write_all(&[1])?;
        b.read_exact(&mut buf)?;
    }
    Ok(start.elapsed().as_nanos() as f64 / f64::from(ITERATIONS))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let support = Support::detect(&Features::detect());
    let mode = match std::env::args().nth(1).as_deref() {
        Some("kprobe") => Mode::Kprobe,
        Some("tracepoint") => Mode::Tracepoint,
        Some(other) => bail!("unknown mode {other:?} (kprobe or tracepoint)"),
        None => match choose(SocketProbes::Auto, &support)? {
            Plan::Try(modes) => *modes.first().context("no mode")?,
            Plan::Off(why) => bail!("no socket probes on this kernel: {why}"),
        },
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut a = TcpStream::connect(listener.local_addr()?)?;
    let (mut b, _) = listener.accept()?;
    a.set_nodelay(true)?;
    let me = std::process::id();
    let dir = std::env::temp_dir();
    let names = [
        "no socket probes",
        "probes on, process not counted",
        "probes on, process counted",
    ];
    let mut times: [Vec<f64>; 3] = Default::default();
    round(&mut a, &mut b)?; // warm-up
    for r in 0..ROUNDS {
        for i in 0..3 {
            let m = (i + r) % 3;
            let mut tracer = Tracer::load(&dir)?;
            if m > 0 {
                tracer.enable_socket_probes(mode)?;
            }
            if m == 2 {
                tracer.socket_track(me, true)?;
            }
            times[m].push(round(&mut a, &mut b)?);
            if m == 2 {
                let counted = tracer.socket_bytes()?;
                let sent = counted
                    .iter()
                    .find(|(p, _)| *p == me)
                    .map(|(_, c)| c.tx_bytes);
                if sent != Some(u64::from(ITERATIONS)) {
                    bail!("the probes counted {sent:?} bytes sent, expected {ITERATIONS}");
                }
            }
        }
    }
    let base = median(times[0].clone());
    println!(
        "socket probes ({}), {ITERATIONS} iterations (1-byte send + receive) per round, {ROUNDS} interleaved rounds, medians\n",
        mode.name()
    );
    println!("| mode | ns per iteration | added ns per hit (2 hits per iteration) |");
    println!("|---|---|---|");
    for (name, t) in names.iter().zip(times) {
        let m = median(t);
        println!("| {name} | {m:.0} | {:.0} |", (m - base) / 2.0);
    }
    Ok(())
}
