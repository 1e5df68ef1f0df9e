//! `--sweep START:STOP:STEP`: runs one open-loop scenario once per offered
//! rate (fresh sockets each time, `--sweep-pause` apart), prints one row per
//! rate as it completes (or, with `--json`, one object holding every
//! report) and, with `--plot FILE.png`, draws the headline kind's latency
//! percentiles against the offered rate.

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
    pub offered: f64,
    pub achieved: f64,
    pub started: u64,
    pub failed: u64,
    /// the headline kind's latency
    pub latency_us: Percentiles,
    pub send_lag_p99_us: u64,
    /// sipload's client threads, cores
    pub cpu_cores: f64,
    /// sipload's CPU per started unit, microseconds
    pub cpu_us_per_unit: f64,
}

impl SweepRow {
    pub fn of(rate: f64, report: &Report) -> SweepRow {
        let primary = report.kinds.iter().find(|k| k.name == report.primary);
        let started = primary.map_or(0, |k| k.started);
        let cpu_s = report.cpu.user_s + report.cpu.sys_s;
        SweepRow {
            rate,
            offered: report.offered_rate,
            achieved: report.achieved_rate,
            started,
            failed: primary.map_or(0, |k| k.failed),
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

    pub fn line(&self) -> String {
        let l = &self.latency_us;
        format!(
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
        )
    }

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
