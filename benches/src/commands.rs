//! What each subcommand does: turn arguments into a `LoadConfig`, start the
//! echo server when the baseline is asked for, run the scenario and print
//! the report (table or JSON).

use serde::Serialize;

use crate::cli::{Command, FanoutArgs, LoadArgs, ModelArgs, OptionsArgs, PublishArgs, RegisterArgs, SubscribeArgs};
use crate::echo::{EchoServer, EchoStats};
use crate::inbound::Reader;
use crate::pacing::secs_to_ns;
use crate::report::Report;
use crate::runner::{available_cpus, run, LoadConfig, RunError};
use crate::scenario::fanout::{self, Fanout, FanoutParams, FanoutShared};
use crate::scenario::model::{self, Model, ModelShared, ModelTiming};
use crate::scenario::options::{self, Options};
use crate::scenario::population::ModelParams;
use crate::scenario::publish::{self, Publish};
use crate::scenario::register::{self, Register, RegisterLoad};
use crate::scenario::subscribe::{self, Subscribe};
use crate::stream::Transport;
use crate::sweep::run_sweep;

fn load_config(scenario: &str, load: &LoadArgs) -> LoadConfig {
    LoadConfig {
        scenario: scenario.to_owned(),
        target: load.target,
        threads: load.threads,
        sockets: load.sockets,
        rate: load.rate.filter(|r| *r > 0.0),
        window: load.window,
        warmup_s: load.warmup,
        duration_s: load.duration,
        timeout_ms: load.timeout_ms,
        pin: load.pin,
        domain: load.domain.clone(),
        transport: load.transport,
        reader: if load.light_parse { Reader::Light } else { Reader::Core },
        echo_baseline: false,
        extra_drain_s: 0.0,
        extra_deadline_s: 0.0,
    }
}

/// The OPTIONS load against an in-process echo server.
pub fn run_echo_baseline(load: &LoadArgs) -> Result<(Report, EchoStats), RunError> {
    if load.transport != Transport::Udp {
        return Err(RunError::Config("the echo baseline is UDP only".into()));
    }
    let server_threads = load.server_threads.unwrap_or_else(available_cpus);
    let bind = std::net::SocketAddr::new(load.target.ip(), 0);
    let server = EchoServer::start(bind, server_threads)?;
    let mut config = load_config("options (echo baseline)", load);
    config.target = server.addr();
    config.echo_baseline = true;
    let notes = vec![format!(
        "echo server: {server_threads} thread(s) in sipload's process replying each datagram unchanged"
    )];
    let result = run(&config, options::KINDS, 0, notes, |_| Options);
    let stats = server.stop();
    let mut report = result?;
    report.notes.push(format!(
        "echo server received {} datagrams, used {:.2} CPU s",
        stats.received, stats.cpu_s
    ));
    Ok((report, stats))
}

fn run_options_against_target(load: &LoadArgs) -> Result<Report, RunError> {
    run(&load_config("options", load), options::KINDS, 0, Vec::new(), |_| {
        Options
    })
}

#[derive(Serialize)]
struct Comparison<'a> {
    echo: &'a Report,
    server: &'a Report,
    /// server achieved rate / echo achieved rate
    ratio: f64,
}

fn print_report(report: &Report, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("sipload: cannot encode the report: {err}"),
        }
    } else {
        print!("{}", report.to_table());
    }
}

fn options_command(args: &OptionsArgs) -> Result<(), RunError> {
    let load = &args.load;
    if !args.compare_echo {
        let run_one = |load: &LoadArgs| {
            if load.baseline {
                Ok(run_echo_baseline(load)?.0)
            } else {
                run_options_against_target(load)
            }
        };
        return run_or_sweep(load, "options", run_one);
    }
    reject_sweep(load, "options --compare-echo")?;
    let (echo, _) = run_echo_baseline(load)?;
    let server = run_options_against_target(load)?;
    let ratio = if echo.achieved_rate > 0.0 {
        server.achieved_rate / echo.achieved_rate
    } else {
        0.0
    };
    if load.json {
        let comparison = Comparison {
            echo: &echo,
            server: &server,
            ratio: (ratio * 10_000.0).round() / 10_000.0,
        };
        match serde_json::to_string(&comparison) {
            Ok(text) => println!("{text}"),
            Err(err) => eprintln!("sipload: cannot encode the report: {err}"),
        }
    } else {
        print!("{}", echo.to_table());
        println!();
        print!("{}", server.to_table());
        println!(
            "\nserver / echo baseline: {:.1}/s / {:.1}/s = {:.1}%",
            server.achieved_rate,
            echo.achieved_rate,
            ratio * 100.0
        );
    }
    Ok(())
}

fn reject_baseline(load: &LoadArgs, scenario: &str) -> Result<(), RunError> {
    if load.baseline {
        return Err(RunError::Config(format!(
            "--baseline applies to options only, not {scenario}"
        )));
    }
    Ok(())
}

fn reject_sweep(load: &LoadArgs, scenario: &str) -> Result<(), RunError> {
    if load.sweep.is_some() {
        return Err(RunError::Config(format!(
            "--sweep applies to options, publish, subscribe, register and echo-baseline, not {scenario}"
        )));
    }
    Ok(())
}

/// One run and its report, or a sweep of runs when `--sweep` is given.
fn run_or_sweep<F>(load: &LoadArgs, scenario: &str, run_one: F) -> Result<(), RunError>
where
    F: Fn(&LoadArgs) -> Result<Report, RunError>,
{
    if load.sweep.is_some() {
        return run_sweep(load, scenario, run_one);
    }
    let report = run_one(load)?;
    print_report(&report, load.json);
    Ok(())
}

fn publish_command(args: &PublishArgs) -> Result<(), RunError> {
    reject_baseline(&args.load, "publish")?;
    if args.presentities == 0 {
        return Err(RunError::Config("--presentities must be positive".into()));
    }
    run_or_sweep(&args.load, "publish", |load| {
        let config = load_config("publish", load);
        let notes = vec![format!(
            "{} presentities, mix initial:refresh:modify = {}:{}:{}, one PUBLISH in flight per presentity",
            args.presentities, args.mix.initial, args.mix.refresh, args.mix.modify
        )];
        run(&config, publish::KINDS, usize::from(publish::ALL), notes, |ctx| {
            Publish::new(ctx.thread, ctx.threads, args.presentities, args.mix, args.expires)
        })
    })
}

fn subscribe_command(args: &SubscribeArgs) -> Result<(), RunError> {
    reject_baseline(&args.load, "subscribe")?;
    run_or_sweep(&args.load, "subscribe", |load| {
        let mut config = load_config("subscribe", load);
        // A dialog is two transactions and two NOTIFY waits long.
        config.extra_drain_s = 3.0 * load.timeout_ms as f64 / 1000.0;
        let timeout_ns = load.timeout_ms.max(1) * 1_000_000;
        let notes = vec![format!(
            "{} presentities; a dialog = SUBSCRIBE/200, NOTIFY/200, unSUBSCRIBE/200, final NOTIFY/200; \
             rate and window count dialogs",
            args.presentities
        )];
        run(
            &config,
            subscribe::KINDS,
            usize::from(subscribe::DIALOG),
            notes,
            |ctx| Subscribe::new(ctx.thread, ctx.threads, args.presentities, args.expires, timeout_ns),
        )
    })
}

fn fanout_command(args: &FanoutArgs) -> Result<(), RunError> {
    let load = &args.load;
    reject_baseline(load, "fanout")?;
    reject_sweep(load, "fanout")?;
    let Some(rate) = load.rate.filter(|r| *r > 0.0 && r.is_finite()) else {
        return Err(RunError::Config("fanout needs --rate (PUBLISHes per second)".into()));
    };
    if args.presentities == 0 || args.watchers == 0 {
        return Err(RunError::Config(
            "--presentities and --watchers must be positive".into(),
        ));
    }
    let total_watchers = u64::from(args.presentities) * u64::from(args.watchers);
    if total_watchers > 10_000_000 {
        return Err(RunError::Config("more than 10 million watchers".into()));
    }
    if !(args.setup_timeout.is_finite() && args.setup_timeout > 0.0) {
        return Err(RunError::Config("--setup-timeout must be positive".into()));
    }
    let mut config = load_config("fanout", load);
    config.rate = None; // the scenario paces its own PUBLISHes
    config.extra_deadline_s = 2.0 * args.setup_timeout + 2.0 * load.timeout_ms as f64 / 1000.0;
    let params = FanoutParams {
        presentities: args.presentities,
        watchers_per_presentity: args.watchers,
        rate,
        setup_window: args.setup_window,
        setup_timeout_ns: secs_to_ns(args.setup_timeout),
        expires: args.expires,
        warmup_s: load.warmup,
        duration_s: load.duration,
        timeout_ns: load.timeout_ms.max(1) * 1_000_000,
    };
    let threads = load.threads.max(1);
    let shared = FanoutShared::new(threads, args.presentities);
    let notes = vec![format!(
        "{} presentities x {} watchers; PUBLISH->NOTIFY counts states delivered: a NOTIFY with the \
             newest state also delivers the older ones it coalesced; expected = watchers x applied \
             measured PUBLISHes",
        args.presentities, args.watchers
    )];
    let mut report = run(&config, fanout::KINDS, usize::from(fanout::DELIVERY), notes, |ctx| {
        Fanout::new(&shared, params, ctx.thread, ctx.threads)
    })?;
    for kind in &mut report.kinds {
        if kind.name == fanout::KINDS[0] || kind.name == fanout::KINDS[3] {
            // Setup and teardown are not part of the measured window.
            kind.success_rate = 0.0;
        }
    }
    report.target_rate = Some(rate);
    report.mode = "open-loop";
    let notifies = shared.notifies_in_window();
    report.counters.insert("notifies_in_window", notifies);
    report.notes.push(format!(
        "NOTIFYs carrying measured states: {notifies} = {:.1}/s",
        notifies as f64 / load.duration.max(1e-9)
    ));
    print_report(&report, load.json);
    Ok(())
}

fn register_command(args: &RegisterArgs) -> Result<(), RunError> {
    reject_baseline(&args.load, "register")?;
    if args.users == 0 || args.expires == 0 {
        return Err(RunError::Config("--users and --expires must be positive".into()));
    }
    let params = RegisterLoad {
        users: args.users,
        refreshes: args.refreshes,
        expires: args.expires,
    };
    run_or_sweep(&args.load, "register", |load| {
        let mut config = load_config("register", load);
        // A registration is 2 + refreshes transactions long.
        config.extra_drain_s = f64::from(args.refreshes.min(100) + 1) * load.timeout_ms as f64 / 1000.0;
        let notes = vec![format!(
            "{} users; a registration = REGISTER/200, {} refresh(es)/200, de-REGISTER (Expires: 0)/200; \
             rate and window count registrations",
            args.users, args.refreshes
        )];
        run(
            &config,
            register::KINDS,
            usize::from(register::REGISTRATION),
            notes,
            |ctx| Register::new(ctx.thread, ctx.threads, params),
        )
    })
}

fn model_params(args: &ModelArgs) -> ModelParams {
    ModelParams {
        users: args.users,
        buddies: args.buddies,
        changes_per_hour: args.changes_per_hour,
        multi_device_share: args.multi_device_share,
        publish_expires: args.publish_expires,
        subscribe_expires: args.subscribe_expires,
        refresh_at: args.refresh_at,
        setup_rate: args.setup_rate,
        seed: args.seed,
    }
}

/// Run the population model and return its report.
pub fn run_model(args: &ModelArgs) -> Result<Report, RunError> {
    let load = &args.load;
    reject_baseline(load, "model")?;
    reject_sweep(load, "model")?;
    if load.rate.is_some() {
        return Err(RunError::Config(
            "model sets its own rates (--changes-per-hour, --setup-rate, the expiry intervals); drop --rate".into(),
        ));
    }
    let params = model_params(args);
    params.validate().map_err(RunError::Config)?;
    if !(args.setup_timeout.is_finite() && args.setup_timeout > 0.0) {
        return Err(RunError::Config("--setup-timeout must be positive".into()));
    }
    let mut config = load_config("model", load);
    config.extra_deadline_s = 2.0 * args.setup_timeout + 2.0 * load.timeout_ms as f64 / 1000.0;
    let timing = ModelTiming {
        warmup_s: load.warmup,
        duration_s: load.duration,
        timeout_ns: load.timeout_ms.max(1) * 1_000_000,
        setup_timeout_ns: secs_to_ns(args.setup_timeout),
    };
    let threads = load.threads.max(1);
    let shared = ModelShared::new(params, threads);
    let expected = params.expected_rates();
    let notes = vec![
        format!(
            "{} users x {} buddies = {} subscriptions; {} publications ({:.0}% of users with 2 devices); \
             {} state changes/user/h; PUBLISH expires {} s, SUBSCRIBE expires {} s, refreshed at {:.0}%",
            params.users,
            params.buddies,
            params.subscriptions(),
            params.publications(),
            params.multi_device_share * 100.0,
            params.changes_per_hour,
            params.publish_expires,
            params.subscribe_expires,
            params.refresh_at * 100.0
        ),
        format!(
            "model rates: {:.1} changes/s + {:.1} PUBLISH refreshes/s + {:.1} SUBSCRIBE refreshes/s = {:.1} \
             requests/s; NOTIFYs expected {:.1}/s",
            expected.changes,
            expected.publish_refreshes,
            expected.subscribe_refreshes,
            expected.requests,
            expected.notifies
        ),
    ];
    let mut report = run(&config, model::KINDS, usize::from(model::STEADY), notes, |ctx| {
        Model::new(&shared, timing, ctx.thread, ctx.threads)
    })?;
    for kind in &mut report.kinds {
        if [model::KINDS[0], model::KINDS[1], model::KINDS[7]].contains(&kind.name) {
            // Setup and teardown are not part of the measured window.
            kind.success_rate = 0.0;
        }
    }
    report.target_rate = Some((expected.requests * 100.0).round() / 100.0);
    report.mode = "open-loop";
    let notifies = report.counters.get("notifies_in_window").copied().unwrap_or(0);
    report.notes.push(format!(
        "NOTIFYs received in the window: {notifies} = {:.1}/s (model: {:.1}/s)",
        notifies as f64 / load.duration.max(1e-9),
        expected.notifies
    ));
    Ok(report)
}

fn model_command(args: &ModelArgs) -> Result<(), RunError> {
    let report = run_model(args)?;
    print_report(&report, args.load.json);
    Ok(())
}

/// Run one parsed command line.
pub fn execute(command: &Command) -> Result<(), RunError> {
    match command {
        Command::Options(args) => options_command(args),
        Command::EchoBaseline(load) => run_or_sweep(load, "echo baseline", |load| Ok(run_echo_baseline(load)?.0)),
        Command::Publish(args) => publish_command(args),
        Command::Subscribe(args) => subscribe_command(args),
        Command::Fanout(args) => fanout_command(args),
        Command::Register(args) => register_command(args),
        Command::Model(args) => model_command(args),
    }
}
