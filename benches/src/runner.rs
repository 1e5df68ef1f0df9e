//! Runs one load: binds the client sockets, splits them and the rate over
//! the client threads, fixes the common `Plan`, runs a `Scenario` on every
//! thread and merges what they measured into a `Report`.

use std::io;
use std::net::SocketAddr;

use crate::engine::{pin_to_cpu, run_worker, ClientSocket, Drive, Plan, Scenario, Worker, WorkerSetup};
use crate::inbound::Reader;
use crate::pacing::{secs_to_ns, Clock, Pacer, NANOS_PER_SEC};
use crate::report::{Report, RunInfo, ThreadStats};
use crate::stream::Transport;

/// How to load the target.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The scenario's name, for the report.
    pub scenario: String,
    /// The server.
    pub target: SocketAddr,
    /// Client threads.
    pub threads: usize,
    /// Client sockets over all threads.
    pub sockets: usize,
    /// total units per second; None = closed loop
    pub rate: Option<f64>,
    /// Closed loop: units in flight per socket.
    pub window: usize,
    /// Seconds of unmeasured load first.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// A transaction without final response after this is a timeout.
    pub timeout_ms: u64,
    /// Pin client thread i to CPU i.
    pub pin: bool,
    /// Domain of the AORs.
    pub domain: String,
    /// UDP sockets, or one TCP connection per "socket"
    pub transport: Transport,
    /// How received messages are parsed.
    pub reader: Reader,
    /// Run against the in-process echo server.
    pub echo_baseline: bool,
    /// extra time after the measurement window for outstanding work (dialogs)
    pub extra_drain_s: f64,
    /// extra time before the hard deadline (setup/teardown phases)
    pub extra_deadline_s: f64,
}

/// Why a load could not run.
#[derive(Debug)]
pub enum RunError {
    /// The flags do not make a runnable load.
    Config(String),
    /// A socket or thread could not be set up.
    Io(io::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Config(text) => write!(f, "bad configuration: {text}"),
            RunError::Io(err) => write!(f, "I/O error: {err}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<io::Error> for RunError {
    fn from(err: io::Error) -> Self {
        RunError::Io(err)
    }
}

/// A per-run nonce so responses meant for an earlier run are not counted.
fn run_nonce() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16))
        .unwrap_or(0);
    (nanos ^ std::process::id().rotate_left(8)) & 0x00ff_ffff
}

/// Number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Everything a scenario constructor may need to know about its thread.
#[derive(Clone, Copy, Debug)]
pub struct ThreadContext {
    /// This thread's index.
    pub thread: u16,
    /// Client threads in the run.
    pub threads: u16,
    /// The run's phases.
    pub plan: Plan,
    /// The clock shared by every thread.
    pub clock: Clock,
    /// Random part of this run's tags, branches and Call-IDs.
    pub nonce: u32,
}

/// Run `make(thread)`'s scenario on every client thread and report.
/// `kind_names` are the statistics kinds; `primary` the headline one.
pub fn run<S, F>(
    config: &LoadConfig,
    kind_names: &'static [&'static str],
    primary: usize,
    notes: Vec<String>,
    make: F,
) -> Result<Report, RunError>
where
    S: Scenario,
    F: Fn(ThreadContext) -> S + Sync,
{
    let threads = config.threads.max(1);
    if threads > usize::from(u16::MAX) {
        return Err(RunError::Config("too many threads".into()));
    }
    if config.sockets < threads {
        return Err(RunError::Config(format!(
            "--sockets {} is less than --threads {threads}",
            config.sockets
        )));
    }
    let duration_ok = config.duration_s.is_finite() && config.duration_s > 0.0;
    let warmup_ok = config.warmup_s.is_finite() && config.warmup_s >= 0.0;
    if !duration_ok || !warmup_ok {
        return Err(RunError::Config("--duration must be > 0 and --warmup >= 0".into()));
    }
    let rate = config.rate.filter(|r| *r > 0.0);
    if let Some(r) = rate {
        if !r.is_finite() {
            return Err(RunError::Config("--rate must be finite".into()));
        }
    }
    let bind_ip = if config.target.is_ipv4() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    };
    if !config.target.ip().is_loopback() {
        return Err(RunError::Config(format!(
            "target {} is not a loopback address",
            config.target
        )));
    }
    let mut per_thread: Vec<Vec<ClientSocket>> = (0..threads).map(|_| Vec::new()).collect();
    for index in 0..config.sockets {
        let socket = match config.transport {
            Transport::Udp => ClientSocket::bind(bind_ip)?,
            Transport::Tcp => ClientSocket::connect(config.target)
                .map_err(|err| io::Error::new(err.kind(), format!("TCP connection to {}: {err}", config.target)))?,
        };
        per_thread[index % threads].push(socket);
    }

    let clock = Clock::new();
    let nonce = run_nonce();
    let timeout_ns = config.timeout_ms.max(1) * 1_000_000;
    let start_ns = clock.now_ns() + 20_000_000;
    let measure_start_ns = start_ns + secs_to_ns(config.warmup_s);
    let measure_end_ns = measure_start_ns + secs_to_ns(config.duration_s);
    let drain_end_ns = measure_end_ns + timeout_ns + secs_to_ns(config.extra_drain_s) + 100_000_000;
    let plan = Plan {
        start_ns,
        measure_start_ns,
        measure_end_ns,
        drain_end_ns,
        hard_deadline_ns: drain_end_ns + secs_to_ns(config.extra_deadline_s) + 2 * NANOS_PER_SEC,
    };
    let cpus = available_cpus();

    let results: Vec<ThreadStats> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (thread, sockets) in per_thread.into_iter().enumerate() {
            let drive = match rate {
                Some(total) => {
                    let per_thread_rate = total / threads as f64;
                    // Threads interleave: thread t starts t/total seconds later.
                    let offset = (thread as f64 * NANOS_PER_SEC as f64 / total) as u64;
                    Drive::Paced(Pacer::new(start_ns + offset, measure_end_ns, per_thread_rate))
                }
                None => Drive::Window(config.window.max(1)),
            };
            let setup = WorkerSetup {
                thread: thread as u16,
                threads: threads as u16,
                clock,
                nonce,
                target: config.target,
                domain: config.domain.clone(),
                sockets,
                timeout_ns,
                plan,
                reader: config.reader,
                echo_baseline: config.echo_baseline,
                kind_names,
                pin_cpu: config.pin.then_some(thread % cpus),
            };
            let make = &make;
            let spawned = std::thread::Builder::new()
                .name(format!("sipload-{thread}"))
                .spawn_scoped(scope, move || {
                    if let Some(cpu) = setup.pin_cpu {
                        pin_to_cpu(cpu);
                    }
                    let context = ThreadContext {
                        thread: setup.thread,
                        threads: setup.threads,
                        plan: setup.plan,
                        clock: setup.clock,
                        nonce: setup.nonce,
                    };
                    let scenario = make(context);
                    run_worker(Worker::new(setup), scenario, drive)
                });
            handles.push(spawned);
        }
        handles
            .into_iter()
            .filter_map(|h| h.ok().and_then(|h| h.join().ok()))
            .collect()
    });
    if results.len() != threads {
        return Err(RunError::Io(io::Error::other("a client thread failed")));
    }
    let mut total = ThreadStats::new(kind_names);
    for stats in &results {
        total.merge(stats);
    }
    let scenario = match config.transport {
        Transport::Udp => config.scenario.clone(),
        Transport::Tcp => format!("{} over TCP", config.scenario),
    };
    let info = RunInfo {
        scenario,
        target: config.target.to_string(),
        open_loop: rate.is_some(),
        threads,
        sockets: config.sockets,
        warmup_s: config.warmup_s,
        duration_s: config.duration_s,
        target_rate: rate,
        primary,
        notes,
    };
    Ok(Report::build(info, &total))
}
