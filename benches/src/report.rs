//! Measurement: per-thread statistics (`ThreadStats`: per transaction kind a
//! latency histogram and outcome counters, plus run-wide event counters and
//! sipload's own CPU time), their merge into a `Report`, and its rendering as
//! a human table or one JSON object.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms hold, in microseconds (one hour).
const MAX_LATENCY_US: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Outcomes and latency of one transaction (or dialog, or NOTIFY) kind.
#[derive(Clone, Debug)]
pub struct KindStats {
    /// The kind's name in the report.
    pub name: &'static str,
    /// units started in the measurement window
    pub started: u64,
    /// Units that succeeded.
    pub succeeded: u64,
    /// Units without a final response in time.
    pub timeouts: u64,
    /// failure final responses by status code
    pub statuses: BTreeMap<u16, u64>,
    /// other failures by reason
    pub failures: BTreeMap<&'static str, u64>,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// latency of successes, microseconds
    pub latency: Histogram<u64>,
}

impl KindStats {
    /// Empty statistics for the kind `name`.
    pub fn new(name: &'static str) -> KindStats {
        KindStats {
            name,
            started: 0,
            succeeded: 0,
            timeouts: 0,
            statuses: BTreeMap::new(),
            failures: BTreeMap::new(),
            retransmissions: 0,
            latency: new_histogram(),
        }
    }

    /// Record a latency (kept in microseconds).
    pub fn record_latency_ns(&mut self, latency_ns: u64) {
        self.latency.saturating_record((latency_ns / 1000).max(1));
    }

    /// Count a success and its latency.
    pub fn success(&mut self, latency_ns: u64) {
        self.succeeded += 1;
        self.record_latency_ns(latency_ns);
    }

    /// Count a failure final response.
    pub fn status_failure(&mut self, status: u16) {
        *self.statuses.entry(status).or_default() += 1;
    }

    /// Count a failure other than a status or a timeout.
    pub fn failure(&mut self, reason: &'static str) {
        *self.failures.entry(reason).or_default() += 1;
    }

    /// Failures of every sort, timeouts included.
    pub fn failed(&self) -> u64 {
        self.timeouts + self.statuses.values().sum::<u64>() + self.failures.values().sum::<u64>()
    }

    fn merge(&mut self, other: &KindStats) {
        self.started += other.started;
        self.succeeded += other.succeeded;
        self.timeouts += other.timeouts;
        for (code, n) in &other.statuses {
            *self.statuses.entry(*code).or_default() += n;
        }
        for (reason, n) in &other.failures {
            *self.failures.entry(reason).or_default() += n;
        }
        self.retransmissions += other.retransmissions;
        // Same bounds on both sides: add cannot fail.
        let _ = self.latency.add(&other.latency);
    }
}

/// Everything one worker thread measured.
#[derive(Clone, Debug)]
pub struct ThreadStats {
    /// Statistics per scenario kind, in the scenario's order.
    pub kinds: Vec<KindStats>,
    /// run-wide event counters (stray datagrams, send drops, NOTIFYs...)
    pub counters: BTreeMap<&'static str, u64>,
    /// how late sipload sent open-loop requests vs their schedule, microseconds
    pub send_lag: Histogram<u64>,
    /// CPU seconds (user, system) this thread used during the measurement window
    pub cpu_user_s: f64,
    /// System CPU seconds (see `cpu_user_s`).
    pub cpu_sys_s: f64,
    /// wall seconds between the CPU samples
    pub wall_s: f64,
}

impl ThreadStats {
    /// Empty statistics for the scenario's kinds.
    pub fn new(kind_names: &[&'static str]) -> ThreadStats {
        ThreadStats {
            kinds: kind_names.iter().map(|n| KindStats::new(n)).collect(),
            counters: BTreeMap::new(),
            send_lag: new_histogram(),
            cpu_user_s: 0.0,
            cpu_sys_s: 0.0,
            wall_s: 0.0,
        }
    }

    /// Count one `event`.
    pub fn count(&mut self, event: &'static str) {
        self.add(event, 1);
    }

    /// Count `n` of `event`.
    pub fn add(&mut self, event: &'static str, n: u64) {
        *self.counters.entry(event).or_default() += n;
    }

    /// Add another thread's statistics.
    pub fn merge(&mut self, other: &ThreadStats) {
        for (mine, theirs) in self.kinds.iter_mut().zip(&other.kinds) {
            mine.merge(theirs);
        }
        for (event, n) in &other.counters {
            *self.counters.entry(event).or_default() += n;
        }
        let _ = self.send_lag.add(&other.send_lag);
        self.cpu_user_s += other.cpu_user_s;
        self.cpu_sys_s += other.cpu_sys_s;
        self.wall_s = self.wall_s.max(other.wall_s);
    }
}

/// CPU time of the calling thread: (user, system) seconds.
pub fn thread_cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage fills the struct; zeroed is a valid initial value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    if rc != 0 {
        return (0.0, 0.0);
    }
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

/// Latency percentiles, microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of `histogram` (all zero when empty).
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: histogram.len(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// One kind's line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct KindReport {
    /// The kind's name.
    pub name: &'static str,
    /// Units started in the measurement window.
    pub started: u64,
    /// Units that succeeded.
    pub succeeded: u64,
    /// Units that failed (timeouts included).
    pub failed: u64,
    /// Units without a final response in time.
    pub timeouts: u64,
    /// failure status code (as text, for JSON keys) → count
    pub statuses: BTreeMap<String, u64>,
    /// Other failures by reason.
    pub failures: BTreeMap<&'static str, u64>,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// successes per second of measurement
    pub success_rate: f64,
    /// Latency of successes.
    pub latency_us: Percentiles,
}

/// sipload's own CPU use during the measurement window.
#[derive(Clone, Debug, Serialize)]
pub struct CpuReport {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Wall seconds the CPU was measured over.
    pub wall_s: f64,
    /// (user + sys) / wall: cores' worth of CPU sipload's client threads used
    pub cores_used: f64,
    /// Client threads.
    pub threads: usize,
}

/// The result of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The server (or `echo`).
    pub target: String,
    /// "open-loop" or "closed-loop"
    pub mode: &'static str,
    /// Client threads.
    pub threads: usize,
    /// Client sockets.
    pub sockets: usize,
    /// Seconds of unmeasured load first.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// configured rate (open loop), per second
    pub target_rate: Option<f64>,
    /// units of the primary kind started per second in the window
    pub offered_rate: f64,
    /// successes of the primary kind per second
    pub achieved_rate: f64,
    /// Name of the primary kind.
    pub primary: &'static str,
    /// One line per kind.
    pub kinds: Vec<KindReport>,
    /// Run-wide event counters.
    pub counters: BTreeMap<&'static str, u64>,
    /// open-loop only: sipload's send time minus scheduled time
    pub send_lag_us: Percentiles,
    /// sipload's own CPU use.
    pub cpu: CpuReport,
    /// Remarks for the reader (e.g. why a figure is not comparable).
    pub notes: Vec<String>,
}

/// What the report needs besides the merged statistics.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// The scenario's name.
    pub scenario: String,
    /// The server (or `echo`).
    pub target: String,
    /// Open loop (paced) or closed loop (window).
    pub open_loop: bool,
    /// Client threads.
    pub threads: usize,
    /// Client sockets.
    pub sockets: usize,
    /// Seconds of unmeasured load first.
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// Configured open-loop rate, per second.
    pub target_rate: Option<f64>,
    /// index of the kind whose successes are the headline rate
    pub primary: usize,
    /// Remarks for the reader.
    pub notes: Vec<String>,
}

impl Report {
    /// The report of a run from its merged statistics.
    pub fn build(info: RunInfo, stats: &ThreadStats) -> Report {
        let duration = info.duration_s.max(1e-9);
        let kinds: Vec<KindReport> = stats
            .kinds
            .iter()
            .map(|k| KindReport {
                name: k.name,
                started: k.started,
                succeeded: k.succeeded,
                failed: k.failed(),
                timeouts: k.timeouts,
                statuses: k.statuses.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
                failures: k.failures.clone(),
                retransmissions: k.retransmissions,
                success_rate: round2(k.succeeded as f64 / duration),
                latency_us: Percentiles::of(&k.latency),
            })
            .collect();
        let primary = kinds.get(info.primary);
        let offered_rate = primary.map_or(0.0, |k| round2(k.started as f64 / duration));
        let achieved_rate = primary.map_or(0.0, |k| k.success_rate);
        let primary_name = primary.map_or("", |k| k.name);
        let wall = stats.wall_s.max(1e-9);
        let mut notes = info.notes;
        let cores_used = (stats.cpu_user_s + stats.cpu_sys_s) / wall;
        if cores_used > 0.85 * info.threads as f64 {
            notes.push(format!(
                "sipload's {} thread(s) used {:.2} cores: the client may be the bottleneck; add --threads",
                info.threads, cores_used
            ));
        }
        let send_lag = Percentiles::of(&stats.send_lag);
        if info.open_loop && send_lag.p99 > 1000 {
            notes.push(format!(
                "sipload sent 1% of requests more than {} µs late (latency still counts from the schedule)",
                send_lag.p99
            ));
        }
        Report {
            scenario: info.scenario,
            target: info.target,
            mode: if info.open_loop { "open-loop" } else { "closed-loop" },
            threads: info.threads,
            sockets: info.sockets,
            warmup_s: info.warmup_s,
            duration_s: info.duration_s,
            target_rate: info.target_rate,
            offered_rate,
            achieved_rate,
            primary: primary_name,
            kinds,
            counters: stats.counters.clone(),
            send_lag_us: send_lag,
            cpu: CpuReport {
                user_s: round3(stats.cpu_user_s),
                sys_s: round3(stats.cpu_sys_s),
                wall_s: round3(stats.wall_s),
                cores_used: round3(cores_used),
                threads: info.threads,
            },
            notes,
        }
    }

    /// The report as a human-readable table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let rate = self.target_rate.map_or("flat out".to_owned(), |r| format!("{r}/s"));
        out.push_str(&format!(
            "== {} -> {} ({}, {} thread(s), {} socket(s), rate {}, warmup {} s, measured {} s)\n",
            self.scenario, self.target, self.mode, self.threads, self.sockets, rate, self.warmup_s, self.duration_s
        ));
        out.push_str(&format!(
            "{}: offered {:.1}/s, achieved {:.1}/s\n",
            self.primary, self.offered_rate, self.achieved_rate
        ));
        out.push_str(&format!(
            "{:<18} {:>9} {:>9} {:>7} {:>7} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "kind", "started", "ok", "failed", "retx", "ok/s", "p50us", "p90us", "p99us", "p99.9us", "max_us"
        ));
        for k in &self.kinds {
            let l = &k.latency_us;
            out.push_str(&format!(
                "{:<18} {:>9} {:>9} {:>7} {:>7} {:>11.1} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
                k.name,
                k.started,
                k.succeeded,
                k.failed,
                k.retransmissions,
                k.success_rate,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max
            ));
            let mut reasons = Vec::new();
            if k.timeouts > 0 {
                reasons.push(format!("timeout={}", k.timeouts));
            }
            for (code, n) in &k.statuses {
                reasons.push(format!("{code}={n}"));
            }
            for (reason, n) in &k.failures {
                reasons.push(format!("{reason}={n}"));
            }
            if !reasons.is_empty() {
                out.push_str(&format!("{:<18}   failures: {}\n", "", reasons.join(" ")));
            }
        }
        if !self.counters.is_empty() {
            let counters: Vec<String> = self.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("events: {}\n", counters.join(" ")));
        }
        if self.mode == "open-loop" {
            let l = &self.send_lag_us;
            out.push_str(&format!(
                "send lag (sipload vs schedule): p50 {} µs, p99 {} µs, max {} µs\n",
                l.p50, l.p99, l.max
            ));
        }
        out.push_str(&format!(
            "sipload CPU: user {:.2} s + sys {:.2} s over {:.2} s = {:.2} cores ({} client thread(s))\n",
            self.cpu.user_s, self.cpu.sys_s, self.cpu.wall_s, self.cpu.cores_used, self.cpu.threads
        ));
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            scenario: "options".into(),
            target: "127.0.0.1:5060".into(),
            open_loop: true,
            threads: 2,
            sockets: 4,
            warmup_s: 1.0,
            duration_s: 2.0,
            target_rate: Some(100.0),
            primary: 0,
            notes: Vec::new(),
        }
    }

    #[test]
    fn threads_merge_into_one_report() {
        let mut a = ThreadStats::new(&["OPTIONS", "other"]);
        let mut b = ThreadStats::new(&["OPTIONS", "other"]);
        for latency_us in 1..=100u64 {
            a.kinds[0].started += 1;
            a.kinds[0].success(latency_us * 1000);
        }
        b.kinds[0].started += 3;
        b.kinds[0].success(5_000_000_000);
        b.kinds[0].timeouts += 1;
        b.kinds[0].status_failure(503);
        b.kinds[0].retransmissions += 4;
        a.count("stray");
        b.add("stray", 2);
        a.cpu_user_s = 0.5;
        b.cpu_sys_s = 0.25;
        a.wall_s = 2.0;
        b.wall_s = 2.5;

        let mut total = ThreadStats::new(&["OPTIONS", "other"]);
        total.merge(&a);
        total.merge(&b);
        let report = Report::build(info(), &total);
        let options = &report.kinds[0];
        assert_eq!(options.started, 103);
        assert_eq!(options.succeeded, 101);
        assert_eq!(options.failed, 2);
        assert_eq!(options.statuses["503"], 1);
        assert_eq!(options.retransmissions, 4);
        assert_eq!(report.offered_rate, 51.5);
        assert_eq!(report.achieved_rate, 50.5);
        assert_eq!(options.latency_us.count, 101);
        assert_eq!(options.latency_us.p50, 51);
        assert!(options.latency_us.max >= 4_990_000);
        assert_eq!(report.counters["stray"], 3);
        assert_eq!(report.cpu.wall_s, 2.5);
        assert_eq!(report.cpu.cores_used, 0.3);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["kinds"][0]["statuses"]["503"], 1);
        assert_eq!(json["mode"], "open-loop");
        let table = report.to_table();
        assert!(table.contains("timeout=1 503=1"), "{table}");
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let stats = ThreadStats::new(&["x"]);
        let report = Report::build(info(), &stats);
        assert_eq!(report.kinds[0].latency_us, Percentiles::default());
        assert_eq!(report.achieved_rate, 0.0);
    }

    #[test]
    fn saturated_client_is_flagged() {
        let mut stats = ThreadStats::new(&["x"]);
        stats.cpu_user_s = 3.9;
        stats.wall_s = 2.0;
        let report = Report::build(info(), &stats);
        assert!(report.notes.iter().any(|n| n.contains("bottleneck")));
    }
}
