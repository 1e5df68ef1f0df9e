//! `--sweep START:STOP:STEP`: runs one open-loop scenario once per offered
//! rate (fresh sockets each time, `--sweep-pause` apart), prints one row per
//! rate as it completes (or, with `--json`, one object holding every
//! report) and, with `--plot FILE.png`, draws the headline kind's latency
//! percentiles against the offered rate.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::cli::LoadArgs;
use crate::plot::{plot_latency_vs_rate, Drawn, SweepPoint};
use crate::report::{Percentiles, Report};
use crate::runner::RunError;

/// One rate's summary line.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SweepRow {
    /// configured rate
    pub rate: f64,
    /// Units of the headline kind started per second.
    pub offered: f64,
    /// Successes of the headline kind per second.
    pub achieved: f64,
    /// Units of the headline kind started.
    pub started: u64,
    /// Units of the headline kind that failed.
    pub failed: u64,
    /// failures of the headline kind by reason (`timeout`, status codes, named reasons)
    pub failures: BTreeMap<String, u64>,
    /// the headline kind's latency
    pub latency_us: Percentiles,
    /// sipload's 99th-percentile lateness against its schedule.
    pub send_lag_p99_us: u64,
    /// sipload's client threads, cores
    pub cpu_cores: f64,
    /// sipload's CPU per started unit, microseconds
    pub cpu_us_per_unit: f64,
}

impl SweepRow {
    /// The row of the run at `rate`.
    pub fn of(rate: f64, report: &Report) -> SweepRow {
        let primary = report.kinds.iter().find(|k| k.name == report.primary);
        let started = primary.map_or(0, |k| k.started);
        let cpu_s = report.cpu.user_s + report.cpu.sys_s;
        let mut failures = BTreeMap::new();
        if let Some(kind) = primary {
            if kind.timeouts > 0 {
                failures.insert("timeout".to_owned(), kind.timeouts);
            }
            failures.extend(kind.statuses.iter().map(|(code, n)| (code.clone(), *n)));
            failures.extend(kind.failures.iter().map(|(reason, n)| ((*reason).to_owned(), *n)));
        }
        SweepRow {
            rate,
            offered: report.offered_rate,
            achieved: report.achieved_rate,
            started,
            failed: primary.map_or(0, |k| k.failed),
            failures,
            latency_us: primary.map(|k| k.latency_us.clone()).unwrap_or_default(),
            send_lag_p99_us: report.send_lag_us.p99,
            cpu_cores: report.cpu.cores_used,
            cpu_us_per_unit: if started > 0 {
                (cpu_s * 1e6 / started as f64 * 10.0).round() / 10.0
            } else {
                0.0
            },
        }
    }

    /// The table header for `line`.
    pub fn header() -> String {
        format!(
            "{:>10} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>8}",
            "rate/s",
            "offered/s",
            "achieved/s",
            "failed",
            "p50us",
            "p90us",
            "p99us",
            "p99.9us",
            "max_us",
            "lag99us",
            "cores",
            "cpu_us/u"
        )
    }

    /// The row, and a second line with the failure reasons when there are any.
    pub fn line(&self) -> String {
        let l = &self.latency_us;
        let mut line = format!(
            "{:>10.1} {:>10.1} {:>10.1} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6.2} {:>8.1}",
            self.rate,
            self.offered,
            self.achieved,
            self.failed,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            self.send_lag_p99_us,
            self.cpu_cores,
            self.cpu_us_per_unit
        );
        if !self.failures.is_empty() {
            let reasons: Vec<String> = self.failures.iter().map(|(r, n)| format!("{r}={n}")).collect();
            line.push_str(&format!("\n{:>10} failures: {}", "", reasons.join(" ")));
        }
        line
    }

    /// The row as a point of the latency chart.
    pub fn point(&self) -> SweepPoint {
        SweepPoint {
            offered: self.offered,
            p50_us: self.latency_us.p50,
            p99_us: self.latency_us.p99,
            p999_us: self.latency_us.p999,
        }
    }
}

#[derive(Serialize)]
struct SweepJson<'a> {
    rows: &'a [SweepRow],
    reports: &'a [Report],
}

/// Run `run_one` at every rate of `load.sweep` and report.
pub fn run_sweep<F>(load: &LoadArgs, scenario: &str, run_one: F) -> Result<(), RunError>
where
    F: Fn(&LoadArgs) -> Result<Report, RunError>,
{
    let Some(sweep) = load.sweep.as_ref() else {
        return Err(RunError::Config("no --sweep given".into()));
    };
    if !(load.sweep_pause.is_finite() && load.sweep_pause >= 0.0) {
        return Err(RunError::Config("--sweep-pause must be >= 0".into()));
    }
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    if !load.json {
        println!(
            "== {scenario} sweep -> {} ({} rates, {} thread(s), {} socket(s), warmup {} s, measured {} s each); \
             latency of the headline kind",
            load.target,
            sweep.rates.len(),
            load.threads,
            load.sockets,
            load.warmup,
            load.duration
        );
        println!("{}", SweepRow::header());
    }
    for (i, &rate) in sweep.rates.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_secs_f64(load.sweep_pause));
        }
        let mut one = load.clone();
        one.rate = Some(rate);
        one.sweep = None;
        one.plot = None;
        let report = run_one(&one)?;
        let row = SweepRow::of(rate, &report);
        if !load.json {
            println!("{}", row.line());
        }
        rows.push(row);
        reports.push(report);
    }
    if load.json {
        match serde_json::to_string(&SweepJson {
            rows: &rows,
            reports: &reports,
        }) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("sipload: cannot encode the sweep: {err}"),
        }
    }
    if let Some(path) = load.plot.as_ref() {
        // The table first, then the note about the chart.
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let points: Vec<SweepPoint> = rows.iter().map(SweepRow::point).collect();
        let title = format!("sipload {scenario} -> {}: latency vs offered rate", load.target);
        match plot_latency_vs_rate(path, &title, &points) {
            Ok(Drawn::WithText) => eprintln!("sipload: chart written to {}", path.display()),
            Ok(Drawn::WithoutText) => eprintln!(
                "sipload: chart written to {} without text (no TrueType font found; set SIPLOAD_FONT)",
                path.display()
            ),
            Err(err) => return Err(RunError::Io(std::io::Error::other(err.to_string()))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{RunInfo, ThreadStats};

    #[test]
    fn rows_summarise_the_headline_kind_and_its_failures() {
        let mut stats = ThreadStats::new(&["other", "PUBLISH all"]);
        let kind = &mut stats.kinds[1];
        kind.started = 100;
        for _ in 0..97 {
            kind.success(2_000_000);
        }
        kind.timeouts = 1;
        kind.status_failure(503);
        kind.failure("not_sent_all_presentities_busy");
        stats.cpu_user_s = 0.001;
        stats.cpu_sys_s = 0.001;
        stats.wall_s = 1.0;
        let info = RunInfo {
            scenario: "publish".into(),
            target: "127.0.0.1:5060".into(),
            open_loop: true,
            threads: 1,
            sockets: 1,
            warmup_s: 0.0,
            duration_s: 1.0,
            target_rate: Some(100.0),
            primary: 1,
            notes: Vec::new(),
        };
        let row = SweepRow::of(100.0, &Report::build(info, &stats));
        assert_eq!((row.started, row.failed), (100, 3));
        assert_eq!(row.latency_us.p50, 2000);
        assert_eq!(row.cpu_us_per_unit, 20.0);
        let line = row.line();
        assert!(
            line.contains("failures: 503=1 not_sent_all_presentities_busy=1 timeout=1"),
            "{line}"
        );
        assert_eq!(row.point().p50_us, 2000);
        assert_eq!(
            SweepRow::header().split_whitespace().count(),
            line.lines().next().unwrap().split_whitespace().count()
        );
    }
}
