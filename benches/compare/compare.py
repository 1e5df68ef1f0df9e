#!/usr/bin/env python3
"""presenced vs Kamailio 5.6 side by side (throughput, latency, memory,
shard scaling).  Driven by run.sh, memory.sh and scaling.sh of this folder;
see README.md there.

Everything runs on loopback; every server this script starts is stopped by
PID when it ends (normally, on error, on Ctrl-C / SIGTERM); every client run
is bounded in count and time.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
KAM_DIR = os.path.join(ROOT, "benches", "kamailio")
SIPP_DIR = os.path.join(ROOT, "benches", "sipp")
IP = "127.0.0.1"

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=False, text=True, capture_output=True, **kw)


# ---------------------------------------------------------------- servers

LIVE = []  # servers to stop on exit


def stop_all():
    while LIVE:
        server = LIVE.pop()
        try:
            server.stop()
        except Exception as e:  # keep stopping the others
            log(f"stop {server.name}: {e}")


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping servers")
    stop_all()
    sys.exit(128 + signum)


def options_probe(port, timeout=0.5):
    """True when a plain UDP OPTIONS gets 200."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.bind((IP, 0))
        lport = s.getsockname()[1]
        branch = "z9hG4bK-cmp-%d" % int(time.time() * 1e6)
        msg = (
            f"OPTIONS sip:probe@{IP}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {IP}:{lport};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@{IP}>;tag=p1\r\nTo: <sip:probe@{IP}:{port}>\r\n"
            f"Call-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (IP, port))
        data = s.recv(65535).decode("latin-1")
        return data.startswith("SIP/2.0 200")
    except OSError:
        return False
    finally:
        s.close()


def session_cpu_seconds(sid):
    """user + system CPU seconds of every live process of session `sid`
    (presenced and its threads; Kamailio's main process and all workers, which
    start.sh puts in their own session)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state): session = field 6, utime/stime = 14/15
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def wait_up(port, proc_alive, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not proc_alive():
            raise RuntimeError(f"{what} exited during startup")
        if options_probe(port):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what}: no 200 to OPTIONS on {IP}:{port} after {seconds} s")


class Presenced:
    name = "presenced"

    def __init__(self, binary, port, shards, outdir, extra=()):
        self.binary, self.port, self.shards, self.outdir = binary, port, shards, outdir
        self.extra = list(extra)
        self.proc = None
        self.mgmt = None

    def start(self):
        args = [self.binary, "--listen", f"{IP}:{self.port}", "--shards", str(self.shards),
                "--mgmt-listen", f"{IP}:0"]
        help_text = sh([self.binary, "--help"]).stdout
        if "--default-policy" in help_text:
            args += ["--default-policy", "allow"]
        # Kamailio runs without a database here: compare like with like, and
        # never share (or reload) a data directory between runs.
        if "--ephemeral" in help_text and "--data-dir" not in self.extra:
            args += ["--ephemeral"]
        args += self.extra
        self.cmdline = " ".join(args)
        self.logpath = os.path.join(self.outdir, f"presenced-{self.port}-{int(time.time() * 1000)}.log")
        logf = open(self.logpath, "w")
        self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        LIVE.append(self)
        wait_up(self.port, lambda: self.proc.poll() is None, "presenced")
        for _ in range(50):
            with open(self.logpath, errors="replace") as f:
                m = re.search(r"management plane listening on http://(\S+)", ANSI.sub("", f.read()))
            if m:
                self.mgmt = m.group(1)
                break
            time.sleep(0.1)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def rss_bytes(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def metrics(self):
        """Prometheus text of the management plane ({} if unreachable)."""
        if not self.mgmt:
            return {}
        host, port = self.mgmt.rsplit(":", 1)
        try:
            s = socket.create_connection((host, int(port)), timeout=2)
            s.sendall(f"GET /metrics HTTP/1.0\r\nHost: {self.mgmt}\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
        except OSError:
            return {}
        out = {}
        for line in data.decode("utf-8", "replace").split("\r\n\r\n", 1)[-1].splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
        return out

    def gauge_sum(self, name):
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self in LIVE:
            LIVE.remove(self)


class Kamailio:
    name = "kamailio"

    def __init__(self, port, workers, outdir):
        self.port, self.workers, self.outdir = port, workers, outdir
        self.started = False

    def start(self):
        LIVE.append(self)  # stop.sh is harmless if start.sh failed
        r = sh([os.path.join(KAM_DIR, "start.sh"), str(self.port), str(self.workers)])
        if r.returncode != 0:
            raise RuntimeError(f"kamailio start.sh failed:\n{r.stdout}{r.stderr}")
        self.started = True
        rundir = os.environ.get("KAM_RUNDIR", f"/tmp/presenced-kamailio-{self.port}")
        with open(os.path.join(rundir, "kamailio.pid")) as f:
            self.pid = int(f.read().strip())
        with open(os.path.join(rundir, "cmdline")) as f:
            self.cmdline = f.read().strip()
        return self

    def shmem_bytes(self):
        r = sh([os.path.join(KAM_DIR, "shmem.sh"), str(self.port)])
        m = re.search(r"(\d+)", r.stdout)
        if r.returncode != 0 or not m:
            raise RuntimeError(f"shmem.sh failed: {r.stdout}{r.stderr}")
        return int(m.group(1))

    def stop(self):
        sh([os.path.join(KAM_DIR, "stop.sh"), str(self.port)])
        if self in LIVE:
            LIVE.remove(self)


def ensure_kamailio_packages():
    """Kamailio 5.6 + presence modules from the distribution (start.sh also
    does this); SIPp (sip-tester) for the memory loader."""
    missing = []
    if not shutil.which("kamailio") or not os.path.exists(
            "/usr/lib/x86_64-linux-gnu/kamailio/modules/presence_xml.so"):
        missing += ["kamailio", "kamailio-presence-modules"]
    if not shutil.which("sipp"):
        missing.append("sip-tester")
    if missing:
        log(f"installing {' '.join(missing)} (apt-get)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq"] + missing, check=True, env=env,
                       stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- binaries

def prepare_binaries(args, outdir):
    """The presenced and sipload binaries of this run, copied into the run
    folder so that a colleague's rebuild cannot swap them mid-run.

    Default: build the committed HEAD (`git archive`, so other engineers'
    uncommitted work in the shared tree is not measured), plus `--patch`
    files if given, in /tmp/presenced-compare-src/REV with the cargo target
    dir /tmp/presenced-compare-target (seeded from target/release the first
    time).  `--tree`: build the working tree as it is.  `--no-build`: take
    target/release as it is.  `--presenced-bin/--sipload-bin`: given files."""
    global BUILD_LABEL
    if args.presenced_bin or args.no_build:
        src_p = args.presenced_bin or os.path.join(ROOT, "target", "release", "presenced")
        src_s = args.sipload_bin or os.path.join(ROOT, "target", "release", "sipload")
        BUILD_LABEL = (f"binary {args.presenced_bin}" if args.presenced_bin
                       else f"target/release as found, tree at {git_rev()}")
    elif args.tree:
        log("cargo build --release -p presenced -p presence-benches (working tree)")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "presenced", "-p", "presence-benches"],
                       cwd=ROOT, check=True)
        src_p = os.path.join(ROOT, "target", "release", "presenced")
        src_s = os.path.join(ROOT, "target", "release", "sipload")
        BUILD_LABEL = f"working tree at {git_rev()}"
    else:
        rev = sh(["git", "-C", ROOT, "rev-parse", "--short=9", "HEAD"]).stdout.strip()
        patches = [os.path.abspath(p) for p in (args.patch or [])]
        tag = rev + ("-p" + hashlib.sha1("".join(open(p).read() for p in patches).encode()).hexdigest()[:8]
                     if patches else "")
        src = f"/tmp/presenced-compare-src/{tag}"
        if not os.path.isdir(src):
            os.makedirs(src + ".tmp", exist_ok=True)
            subprocess.run(f"git -C {ROOT} archive {rev} | tar -x -C {src}.tmp", shell=True, check=True)
            for p in patches:
                subprocess.run(["patch", "-p1", "-s", "-d", src + ".tmp", "-i", p], check=True)
            os.rename(src + ".tmp", src)
        target = "/tmp/presenced-compare-target"
        if not os.path.isdir(target) and os.path.isdir(os.path.join(ROOT, "target", "release")):
            log(f"seeding {target} from target/release (dependencies compiled once)")
            os.makedirs(target)
            subprocess.run(["cp", "-a", os.path.join(ROOT, "target", "release"), target], check=True)
        log(f"cargo build --release -p presenced -p presence-benches (git archive {rev}"
            f"{' + ' + ', '.join(os.path.basename(p) for p in patches) if patches else ''}, in {src})")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "presenced", "-p", "presence-benches"],
                       cwd=src, check=True, env=dict(os.environ, CARGO_TARGET_DIR=target))
        src_p = os.path.join(target, "release", "presenced")
        src_s = os.path.join(target, "release", "sipload")
        BUILD_LABEL = f"commit {rev}" + (f" + patch {', '.join(os.path.relpath(p, ROOT) for p in patches)}"
                                         if patches else "")
    if args.sipload_bin:
        src_s = args.sipload_bin
    dst_p, dst_s = os.path.join(outdir, "presenced"), os.path.join(outdir, "sipload")
    shutil.copy2(src_p, dst_p)
    shutil.copy2(src_s, dst_s)
    return dst_p, dst_s


BUILD_LABEL = ""


def git_rev():
    r = sh(["git", "-C", ROOT, "log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M"])
    dirty = sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    return r.stdout.strip() + (" (+ uncommitted changes in the tree)" if dirty else "")


def machine_info(presenced_bin, sipload_bin):
    model = ""
    for line in sh(["lscpu"]).stdout.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    kam = sh(["kamailio", "-v"]).stdout.splitlines()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "hypervisor": next((l.split(":", 1)[1].strip() for l in sh(["lscpu"]).stdout.splitlines()
                            if l.startswith("Hypervisor vendor:")), "none"),
        "presenced": sh([presenced_bin, "--version"]).stdout.strip(),
        "sipload": sh([sipload_bin, "--version"]).stdout.strip(),
        "kamailio": kam[0].replace("version: ", "").strip() if kam else "?",
        "git": BUILD_LABEL or git_rev(),
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- sipload

class Runner:
    def __init__(self, sipload, outdir, args):
        self.sipload, self.outdir, self.args = sipload, outdir, args
        self.count = 0

    def run(self, server, port, scenario, rate, extra=(), label="", sid=None):
        """One sipload run (--json); returns the parsed report plus our
        verdict."""
        self.count += 1
        domain = f"r{os.getpid()}x{self.count}.example.com"  # fresh presentities every run
        a = self.args
        cmd = [self.sipload, scenario, "--target", f"{IP}:{port}", "--rate", f"{rate:.0f}",
               "--duration", str(a.duration), "--warmup", str(a.warmup), "--threads", str(a.client_threads),
               "--timeout-ms", str(a.timeout_ms), "--domain", domain, "--json"] + list(extra)
        budget = a.warmup + a.duration + a.timeout_ms / 1000 * 3 + 90  # setup/teardown bounded by sipload too
        t0 = time.time()
        cpu0 = session_cpu_seconds(sid) if sid else None
        try:
            r = subprocess.run(cmd, text=True, capture_output=True, timeout=budget)
        except subprocess.TimeoutExpired:
            return {"ok": False, "problems": [f"sipload exceeded {budget:.0f} s"], "rate": rate, "report": None}
        wall = time.time() - t0
        path = os.path.join(self.outdir, f"{self.count:03d}-{server}-{scenario}-{rate:.0f}{label}.json")
        with open(path, "w") as f:
            f.write(r.stdout)
        try:
            rep = json.loads(r.stdout)
        except ValueError:
            return {"ok": False, "problems": [f"sipload exit {r.returncode}: {r.stderr.strip()[-300:]}"],
                    "rate": rate, "report": None}
        res = assess(rep, scenario, rate, extra_mult(scenario, extra))
        res.update(rate=rate, report=rep, file=path, wall=wall, cmd=" ".join(cmd))
        if sid:
            # Server CPU over the whole sipload run (warm-up, set-up, drain and
            # teardown included) per unit of the primary kind completed in it:
            # an upper bound of the cost per unit, the same for both servers.
            cpu = session_cpu_seconds(sid) - cpu0
            units = kind(rep, rep["primary"])["succeeded"] * (a.warmup + a.duration) / a.duration
            res["server_cpu_s"] = cpu
            res["server_cores"] = cpu / wall
            res["server_cpu_us_per_unit"] = cpu / units * 1e6 if units else None
        status = "clean" if res["ok"] else "NOT clean: " + "; ".join(res["problems"])
        prim = kind(rep, rep["primary"])
        cpu_note = (f", server {res['server_cores']:.2f} cores, {res['server_cpu_us_per_unit']:.1f} us/unit"
                    if res.get("server_cpu_us_per_unit") else "")
        log(f"  {server:9} {scenario:9} rate {rate:8.0f}/s -> {rep['achieved_rate']:10.1f} {rep['primary']}/s, "
            f"p99 {prim['latency_us']['p99'] / 1000:7.1f} ms{cpu_note}  [{status}]  (load {loadavg()})")
        return res


def extra_mult(scenario, extra):
    """Primary units per rate unit: fanout delivers `watchers` states per PUBLISH."""
    if scenario != "fanout":
        return 1
    extra = list(extra)
    if "--watchers" in extra:
        return int(extra[extra.index("--watchers") + 1])
    return 1


def kind(rep, name):
    return next(k for k in rep["kinds"] if k["name"] == name)


def assess(rep, scenario, rate, mult):
    """Clean = no failures or timeouts of any kind, retransmissions <= 0.1 %
    of the transactions, sipload kept the schedule (offered >= 97 % of the
    asked rate) and the server kept up (achieved >= 97 % of offered)."""
    problems = []
    started = sum(k["started"] for k in rep["kinds"])
    retx = sum(k["retransmissions"] for k in rep["kinds"])
    for k in rep["kinds"]:
        if k["failed"]:
            why = [f"timeout={k['timeouts']}"] if k["timeouts"] else []
            why += [f"{c}={n}" for c, n in k["statuses"].items()] + [f"{c}={n}" for c, n in k["failures"].items()]
            problems.append(f"{k['name']} failed {k['failed']} ({' '.join(why)})")
    if retx > 0.001 * max(started, 1):
        problems.append(f"{retx} retransmissions")
    expected = rate * mult
    if rep["offered_rate"] < 0.97 * expected:
        problems.append(f"offered {rep['offered_rate']:.0f}/s < 97% of {expected:.0f}/s")
    if rep["achieved_rate"] < 0.97 * max(rep["offered_rate"], 1e-9):
        problems.append(f"achieved {rep['achieved_rate']:.0f}/s < 97% of offered")
    backlog = rep.get("counters", {}).get("publish_backlog_abandoned", 0)
    if backlog:
        problems.append(f"{backlog} PUBLISHes abandoned in the backlog")
    return {"ok": not problems, "problems": problems,
            "client_bound": any("bottleneck" in n for n in rep.get("notes", []))}


SCENARIOS = {
    # name: (sipload subcommand, extra args, figure, unit)
    "publish": ("publish", ["--presentities", "10000"], "PUBLISH/s (20:60:20 initial:refresh:modify, 10k presentities)", "PUBLISH/s"),
    "subscribe": ("subscribe", ["--presentities", "10000"], "SUBSCRIBE dialogs/s (SUBSCRIBE, NOTIFY, un-SUBSCRIBE, NOTIFY)", "dialogs/s"),
    "fanout": ("fanout", ["--presentities", "20", "--watchers", "50"], "NOTIFY/s fan-out (20 presentities x 50 watchers)", "NOTIFY/s"),
    "options": ("options", [], "OPTIONS/s (stateless baseline)", "OPTIONS/s"),
}


UNIT = {"publish": "PUBLISH", "subscribe": "dialog", "fanout": "NOTIFY", "options": "OPTIONS"}


def ramp(runner, server, port, scen, start, factor, max_steps, sid=None):
    """Open-loop rate search: multiply the rate by `factor` while runs are
    clean, then one step at the geometric middle of the last clean and the
    first unclean rate.  Peak = highest achieved rate of a clean run."""
    cmd, extra, _, _ = SCENARIOS[scen]
    steps = []
    rate = start
    good = bad = None
    while len(steps) < max_steps:
        res = runner.run(server, port, cmd, rate, extra, sid=sid)
        steps.append(res)
        if res["ok"]:
            good = rate
            if bad is not None:
                break
            rate *= factor
        else:
            bad = rate
            if good is not None:
                break
            rate /= factor  # even the first rate was too much: step down
            if rate < 10:
                break
    if good is not None and bad is not None and bad > good * 1.05 and len(steps) < max_steps + 1:
        mid = math.sqrt(good * bad)
        res = runner.run(server, port, cmd, mid, extra, label="-refine", sid=sid)
        steps.append(res)
    clean = [s for s in steps if s["ok"]]
    best = max(clean, key=lambda s: s["report"]["achieved_rate"]) if clean else None
    # never saw an unclean run: the peak is only a lower bound
    capped = bad is None or (best is not None and best["rate"] >= bad)
    return {"peak": best["report"]["achieved_rate"] if best else 0.0, "peak_rate": best["rate"] if best else 0.0,
            "best": best, "steps": steps, "capped": capped,
            "cpu_us_per_unit": best.get("server_cpu_us_per_unit") if best else None,
            "client_bound": bool(best and best.get("client_bound"))}


def peak_step_field(ramps, field):
    best = max(ramps, key=lambda r: r["peak"])
    return best["best"].get(field) if best.get("best") else None


def median_or_none(xs):
    return statistics.median(xs) if xs else None


def summarize_steps(steps):
    return [{"rate": s["rate"], "ok": s["ok"], "problems": s["problems"],
             "server_cores": s.get("server_cores"), "server_cpu_us_per_unit": s.get("server_cpu_us_per_unit"),
             "achieved": s["report"]["achieved_rate"] if s.get("report") else None,
             "file": s.get("file")} for s in steps]


def p99_ms(res, kind_name):
    return kind(res["report"], kind_name)["latency_us"]["p99"] / 1000


def bound(entry):
    return ">=" if entry.get("capped") else ""


def fmt_rate(x):
    return f"{x:,.0f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"


# ---------------------------------------------------------------- commands

def common_setup(args, what):
    outdir = args.out or f"/tmp/presenced-compare-{what}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.makedirs(outdir, exist_ok=True)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return outdir


def cmd_run(args):
    outdir = common_setup(args, "run")
    ensure_kamailio_packages()
    presenced_bin, sipload_bin = prepare_binaries(args, outdir)
    shards = args.shards or os.cpu_count()
    info = machine_info(presenced_bin, sipload_bin)
    info["load_start"] = loadavg()
    runner = Runner(sipload_bin, outdir, args)
    scenarios = [s for s in args.scenarios.split(",") if s]
    starts = {"publish": args.publish_start, "subscribe": args.subscribe_start, "fanout": args.fanout_start,
              "options": args.options_start}
    results = {"machine": info, "args": vars(args), "shards": shards, "scenarios": {}}
    t_begin = time.time()
    servers = {
        "presenced": lambda: Presenced(presenced_bin, args.presenced_port, shards, outdir),
        "kamailio": lambda: Kamailio(args.kamailio_port, shards, outdir),
    }
    cmdlines = {}
    try:
        for scen in scenarios:
            if scen not in SCENARIOS and scen != "latency":
                raise SystemExit(f"unknown scenario {scen}")
            if scen == "latency":
                continue
            log(f"== {scen}: {args.rounds} rounds, alternating presenced / kamailio, fresh server per ramp")
            per = {"presenced": [], "kamailio": []}
            for rnd in range(args.rounds):
                for name in ("presenced", "kamailio"):
                    prev = [r["peak_rate"] for r in per[name] if r["peak_rate"]]
                    start = max(prev) * 0.6 if prev else starts[scen]
                    server = servers[name]().start()
                    cmdlines[name] = server.cmdline
                    port = args.presenced_port if name == "presenced" else args.kamailio_port
                    try:
                        per[name].append(ramp(runner, name, port, scen, start, args.factor, args.max_steps,
                                              sid=server.pid))
                    finally:
                        server.stop()
            results["scenarios"][scen] = {
                n: {"peaks": [r["peak"] for r in rs],
                    "capped": any(r["capped"] for r in rs if r["peak"] == max(x["peak"] for x in rs)),
                    "client_bound": any(r["client_bound"] for r in rs),
                    "best": max(r["peak"] for r in rs),
                    "p99_ms_at_best": (p99_ms(max(rs, key=lambda r: r["peak"])["best"],
                                              max(rs, key=lambda r: r["peak"])["best"]["report"]["primary"])
                                       if max(r["peak"] for r in rs) else None),
                    "peak_rates": [r["peak_rate"] for r in rs],
                    # server CPU per unit and cores in the run that gave the best peak
                    "cpu_at_peak": peak_step_field(rs, "server_cpu_us_per_unit"),
                    "cores_at_peak": peak_step_field(rs, "server_cores"),
                    # server CPU per unit: median over every clean run of the searches
                    "cpu_us_per_unit": median_or_none([st["server_cpu_us_per_unit"] for r in rs for st in r["steps"]
                                                       if st["ok"] and st.get("server_cpu_us_per_unit")]),
                    "steps": [summarize_steps(r["steps"]) for r in rs]}
                for n, rs in per.items()}
        if "latency" in scenarios:
            lat = latency_runs(args, runner, servers, results)
            results["scenarios"]["latency"] = lat
    finally:
        stop_all()
    info["load_end"] = loadavg()
    info["elapsed_s"] = round(time.time() - t_begin)
    results["cmdlines"] = cmdlines
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    table = render_run(results, args)
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(table)
    print(table)
    log(f"results: {outdir}/summary.md, results.json, one JSON per sipload run")


def cmd_render(args):
    with open(args.results) as f:
        results = json.load(f)
    for scen, data in results["scenarios"].items():
        if scen == "latency":
            continue
        for name in ("presenced", "kamailio"):  # results of older versions: recompute from the steps
            d = data[name]
            if "cpu_at_peak" not in d:
                steps = [st for rnd in d["steps"] for st in rnd if st["ok"] and st.get("achieved") == d["best"]]
                d["cpu_at_peak"] = steps[0].get("server_cpu_us_per_unit") if steps else None
                d["cores_at_peak"] = steps[0].get("server_cores") if steps else None
    print(render_run(results, argparse.Namespace(**results["args"])))


def latency_runs(args, runner, servers, results):
    """p99 PUBLISH->NOTIFY at half the peak fan-out rate, alternating."""
    cmd, extra, _, _ = SCENARIOS["fanout"]
    fan = results["scenarios"].get("fanout")
    rates = {}
    for name in ("presenced", "kamailio"):
        peak_pub = max(fan[name]["peak_rates"]) if fan else 0
        rates[name] = args.latency_rate or (peak_pub / 2 if peak_pub else 500)
    log(f"== latency: fanout at half the peak PUBLISH rate ({rates}), {args.rounds} rounds alternating")
    out = {n: {"rate": rates[n], "p99_ms": [], "p50_ms": [], "clean": []} for n in rates}
    for _ in range(args.rounds):
        for name in ("presenced", "kamailio"):
            server = servers[name]().start()
            port = args.presenced_port if name == "presenced" else args.kamailio_port
            try:
                res = runner.run(name, port, cmd, rates[name], extra, label="-latency", sid=server.pid)
            finally:
                server.stop()
            if res.get("report"):
                k = kind(res["report"], "PUBLISH->NOTIFY")
                out[name]["p99_ms"].append(k["latency_us"]["p99"] / 1000)
                out[name]["p50_ms"].append(k["latency_us"]["p50"] / 1000)
                out[name]["clean"].append(res["ok"])
    for name in out:
        if out[name]["p99_ms"]:
            out[name]["p99_median_ms"] = statistics.median(out[name]["p99_ms"])
    # also the same absolute rate for both: Kamailio's half peak
    return out


def render_run(results, args):
    m = results["machine"]
    lines = []
    lines.append(f"## presenced vs Kamailio, side by side ({m['date']})\n")
    lines.append(f"Machine: {m['nproc']} CPUs, {m['cpu']} ({m['hypervisor']} guest), kernel {m['kernel']}; "
                 f"load average {m['load_start']} at start, {m['load_end']} at end "
                 f"(shared with other engineers' builds); {m['elapsed_s']} s in all.  ")
    lines.append(f"Versions: {m['presenced']} ({m['git']}), {m['sipload']}, {m['kamailio']}.  ")
    lines.append(f"presenced --shards {results['shards']}, Kamailio -n {results['shards']} workers; "
                 f"client sipload --threads {args.client_threads}, UDP loopback.  ")
    lines.append(f"Each figure: best of {args.rounds} open-loop rate searches per server, run alternately "
                 f"(presenced, Kamailio, presenced, ...), fresh server per search; a rate counts when the run "
                 f"is clean (no failure/timeout, retransmissions <= 0.1 %, achieved >= 97 % of offered).\n")
    lines.append("| figure | presenced | Kamailio 5.6 | presenced/Kamailio | all peaks (P / K) |")
    lines.append("|---|---:|---:|---:|---|")
    for scen, data in results["scenarios"].items():
        if scen == "latency":
            continue
        p, k = data["presenced"], data["kamailio"]
        lines.append(f"| {SCENARIOS[scen][2]} | {bound(p)}{fmt_rate(p['best'])} | {bound(k)}{fmt_rate(k['best'])} | "
                     f"{ratio(p['best'], k['best'])} | {' '.join(fmt_rate(x) for x in p['peaks'])} / "
                     f"{' '.join(fmt_rate(x) for x in k['peaks'])} |")
    for scen, data in results["scenarios"].items():
        if scen == "latency":
            continue
        p, k = data["presenced"], data["kamailio"]
        if p.get("p99_ms_at_best") is not None and k.get("p99_ms_at_best") is not None:
            lines.append(f"| p99 latency at that peak, {scen} (ms) | {p['p99_ms_at_best']:.1f} | "
                         f"{k['p99_ms_at_best']:.1f} | {ratio(p['p99_ms_at_best'], k['p99_ms_at_best'])} | |")
    for scen, data in results["scenarios"].items():
        if scen == "latency":
            continue
        p, k = data["presenced"], data["kamailio"]
        if p.get("cpu_at_peak") and k.get("cpu_at_peak"):
            lines.append(f"| server CPU per {UNIT[scen]} in the peak run, {scen} (us) [cores used] | "
                         f"{p['cpu_at_peak']:.1f} [{p['cores_at_peak']:.2f}] | "
                         f"{k['cpu_at_peak']:.1f} [{k['cores_at_peak']:.2f}] | "
                         f"{ratio(p['cpu_at_peak'], k['cpu_at_peak'])} | median of all clean runs: "
                         f"{p['cpu_us_per_unit']:.1f} / {k['cpu_us_per_unit']:.1f} |")
    lat = results["scenarios"].get("latency")
    if lat:
        p, k = lat["presenced"], lat["kamailio"]
        if p.get("p99_ms") and k.get("p99_ms"):
            lines.append(f"| p99 PUBLISH->NOTIFY at half the own peak fan-out rate (ms; median of rounds) | "
                         f"{p['p99_median_ms']:.2f} @ {p['rate']:.0f} PUBLISH/s | {k['p99_median_ms']:.2f} @ "
                         f"{k['rate']:.0f} PUBLISH/s | {ratio(p['p99_median_ms'], k['p99_median_ms'])} | "
                         f"{' '.join(f'{x:.2f}' for x in p['p99_ms'])} / {' '.join(f'{x:.2f}' for x in k['p99_ms'])} |")
    lines.append("")
    lines.append("`>=`: the search ended (--max-steps) before any unclean run, the peak is a lower bound.  "
                 "Server CPU = user+system time of the server's whole session (presenced; Kamailio's main "
                 "process and every worker) over the whole sipload run (warm-up, fan-out set-up, drain and "
                 "teardown included), per unit completed, scaled by (warm-up+duration)/duration; cores = "
                 "that CPU / wall time of the run.")
    for scen, data in results["scenarios"].items():
        for name in ("presenced", "kamailio"):
            if isinstance(data.get(name), dict) and data[name].get("client_bound"):
                lines.append(f"Note: in {scen}, sipload flagged itself as a possible bottleneck against {name} "
                             f"(client CPU > 85 % of its threads); more --client-threads may raise that figure.")
    lines.append("")
    lines.append("Server command lines:")
    for name, c in results.get("cmdlines", {}).items():
        lines.append(f"- {name}: `{c}`")
    lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- memory

def sipp_run(target_port, scenario, rate, calls, env_extra=None, extra=()):
    env = dict(os.environ)
    env.update(env_extra or {})
    cmd = [os.path.join(SIPP_DIR, "run.sh"), f"{IP}:{target_port}", scenario, str(rate), str(calls)]
    if extra:
        cmd += ["--"] + list(extra)
    r = subprocess.run(cmd, text=True, capture_output=True, env=env, timeout=calls / rate + 120)
    m = re.search(r"successful=(\d+) failed=(\d+) retransmissions=(\d+)", r.stdout)
    ok, failed, retx = (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else (0, calls, 0)
    return {"ok": ok, "failed": failed, "retx": retx, "out": r.stdout[-600:], "cmd": " ".join(cmd)}


def load_state(server, port, n, m, outdir, rate, settle):
    """N presentities with a ~500-byte PIDF, then M subscriptions spread over
    them (Contact = a NOTIFY sink); the memory reading before, after the
    presentities and after the subscriptions."""
    tag = f"m{os.getpid() % 100000:05d}{server.name[0]}_"  # 8 characters: 498-byte PIDF
    reading = server.rss_bytes if server.name == "presenced" else server.shmem_bytes
    time.sleep(1)
    readings = {"base": reading()}
    log(f"  {server.name}: base {readings['base']:,} B; loading {n} presentities (publish_500.xml, {rate}/s)")
    pub = sipp_run(port, os.path.join(HERE, "publish_500.xml"), rate, n,
                   {"SIPP_USER": tag, "SIPP_OUT": os.path.join(outdir, f"{server.name}-pub")})
    time.sleep(settle)
    readings["presentities"] = reading()
    # watchers: watcher i -> presentity (i mod N) + 1
    inf = os.path.join(outdir, f"{server.name}-watchers.csv")
    with open(inf, "w") as f:
        f.write("SEQUENTIAL\n")
        for i in range(m):
            f.write(f"{tag}{i % n + 1};\n")
    sink_port = free_udp_port()
    sink_env = dict(os.environ, SIPP_OUT=os.path.join(outdir, f"{server.name}-sink"),
                    SIPP_TIMEOUT=str(int(m / rate + settle + 60)))
    sink = subprocess.Popen([os.path.join(SIPP_DIR, "run.sh"), f"{IP}:{sink_port}", "notify_sink", "0", str(m)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=sink_env,
                            start_new_session=True)
    try:
        time.sleep(1)
        log(f"  {server.name}: {readings['presentities']:,} B; subscribing {m} watchers (subscribe_fanout.xml)")
        sub = sipp_run(port, "subscribe_fanout", rate, m, {"SIPP_OUT": os.path.join(outdir, f"{server.name}-sub")},
                       ["-inf", inf, "-key", "sink", f"{IP}:{sink_port}"])
        time.sleep(settle)
        readings["subscriptions"] = reading()
    finally:
        # the sink's own SIPp is in its own session: stop that group only
        try:
            os.killpg(sink.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(sink.pid, signal.SIGKILL)
    log(f"  {server.name}: {readings['subscriptions']:,} B")
    return readings, pub, sub


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((IP, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cmd_memory(args):
    outdir = common_setup(args, "memory")
    ensure_kamailio_packages()
    presenced_bin, sipload_bin = prepare_binaries(args, outdir)
    shards = args.shards or os.cpu_count()
    info = machine_info(presenced_bin, sipload_bin)
    info["load_start"] = loadavg()
    n, m = args.presentities, args.subscriptions
    res = {}
    try:
        for name in ("presenced", "kamailio"):
            server = (Presenced(presenced_bin, args.presenced_port, shards, outdir) if name == "presenced"
                      else Kamailio(args.kamailio_port, shards, outdir)).start()
            port = args.presenced_port if name == "presenced" else args.kamailio_port
            try:
                readings, pub, sub = load_state(server, port, n, m, outdir, args.rate, args.settle)
                extra = {}
                if name == "presenced":
                    extra = {g: server.gauge_sum(f"presenced_{g}") for g in ("presentities", "publications",
                                                                             "subscriptions")}
                res[name] = {"readings": readings, "publish": pub, "subscribe": sub, "gauges": extra,
                             "cmdline": server.cmdline}
            finally:
                server.stop()
    finally:
        stop_all()
    info["load_end"] = loadavg()
    out = render_memory(res, n, m, info, shards)
    with open(os.path.join(outdir, "memory.json"), "w") as f:
        json.dump({"machine": info, "results": res}, f, indent=1, default=str)
    with open(os.path.join(outdir, "memory.md"), "w") as f:
        f.write(out)
    print(out)


def render_memory(res, n, m, info, shards):
    lines = [f"## Memory, {n} presentities (~500-byte PIDF) + {m} subscriptions ({info['date']})\n",
             f"Machine: {info['nproc']} CPUs {info['cpu']}, load {info['load_start']} -> {info['load_end']}; "
             f"{info['presenced']} ({info['git']}) --shards {shards}, {info['kamailio']} -n {shards}.  ",
             "presenced: growth of VmRSS (/proc/PID/status) of the whole process; Kamailio: growth of "
             "`shmem:real_used_size` (benches/kamailio/shmem.sh), read after the settle time so tm's "
             "finished transactions are gone.  Loaded with SIPp: benches/compare/publish_500.xml over N "
             "presentities, then benches/sipp/subscribe_fanout.xml (watcher i -> presentity i mod N, "
             "Contact = a notify_sink).\n",
             "| | presenced | Kamailio 5.6 | presenced/Kamailio |", "|---|---:|---:|---:|"]
    per = {}
    for name, r in res.items():
        rd = r["readings"]
        per[name] = ((rd["presentities"] - rd["base"]) / n, (rd["subscriptions"] - rd["presentities"]) / m)
    p, k = per.get("presenced", (0, 0)), per.get("kamailio", (0, 0))
    lines.append(f"| bytes per presentity | {p[0]:,.0f} | {k[0]:,.0f} | {ratio(p[0], k[0])} |")
    lines.append(f"| bytes per subscription | {p[1]:,.0f} | {k[1]:,.0f} | {ratio(p[1], k[1])} |")
    for name, r in res.items():
        rd = r["readings"]
        lines.append(f"| {name} readings base / +N / +M (bytes) | "
                     + (f"{rd['base']:,} / {rd['presentities']:,} / {rd['subscriptions']:,} | | |" if name == "presenced"
                        else f" | {rd['base']:,} / {rd['presentities']:,} / {rd['subscriptions']:,} | |"))
    for name, r in res.items():
        lines.append(f"| {name} loads: PUBLISH ok/failed/retx, SUBSCRIBE ok/failed/retx | "
                     f"{r['publish']['ok']}/{r['publish']['failed']}/{r['publish']['retx']}, "
                     f"{r['subscribe']['ok']}/{r['subscribe']['failed']}/{r['subscribe']['retx']} | | |")
    g = res.get("presenced", {}).get("gauges")
    if g:
        lines.append(f"\npresenced gauges after loading: {', '.join(f'{k} {v:.0f}' for k, v in g.items())}.")
    lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- scaling

def cmd_scaling(args):
    outdir = common_setup(args, "scaling")
    presenced_bin, sipload_bin = prepare_binaries(args, outdir)
    info = machine_info(presenced_bin, sipload_bin)
    info["load_start"] = loadavg()
    runner = Runner(sipload_bin, outdir, args)
    shard_counts = [int(x) for x in args.shard_list.split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    starts = {"publish": args.publish_start, "fanout": args.fanout_start, "subscribe": args.subscribe_start,
              "options": args.options_start}
    table = {}
    try:
        for scen in scenarios:
            log(f"== scaling {scen}: shards {shard_counts}, {args.rounds} rounds alternating")
            per = {s: [] for s in shard_counts}
            for _ in range(args.rounds):
                for s in shard_counts:
                    prev = [r["peak_rate"] for r in per[s] if r["peak_rate"]]
                    start = max(prev) * 0.6 if prev else starts[scen]
                    server = Presenced(presenced_bin, args.presenced_port, s, outdir).start()
                    try:
                        per[s].append(ramp(runner, f"shards={s}", args.presenced_port, scen, start, args.factor,
                                           args.max_steps, sid=server.pid))
                    finally:
                        server.stop()
            table[scen] = {s: {"peaks": [r["peak"] for r in rs], "best": max(r["peak"] for r in rs),
                               "steps": [summarize_steps(r["steps"]) for r in rs]} for s, rs in per.items()}
    finally:
        stop_all()
    info["load_end"] = loadavg()
    lines = [f"## presenced throughput against shard count ({info['date']})\n",
             f"Machine: {info['nproc']} CPUs {info['cpu']}, load {info['load_start']} -> {info['load_end']}; "
             f"{info['presenced']} ({info['git']}), {info['sipload']} --threads {args.client_threads} on the "
             f"same cores.  Best of {args.rounds} rate searches per shard count, alternating.\n",
             "| scenario | " + " | ".join(f"--shards {s}" for s in shard_counts) + " | "
             + f"{shard_counts[-1]} vs {shard_counts[0]} |",
             "|---|" + "---:|" * (len(shard_counts) + 1)]
    for scen, data in table.items():
        first, last = data[shard_counts[0]]["best"], data[shard_counts[-1]]["best"]
        lines.append(f"| {SCENARIOS[scen][3]} ({scen}) | "
                     + " | ".join(f"{fmt_rate(data[s]['best'])} ({' '.join(fmt_rate(x) for x in data[s]['peaks'])})"
                                  for s in shard_counts) + f" | {ratio(last, first)} |")
    out = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "scaling.json"), "w") as f:
        json.dump({"machine": info, "table": table}, f, indent=1, default=str)
    with open(os.path.join(outdir, "scaling.md"), "w") as f:
        f.write(out)
    print(out)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--out", help="result folder (default /tmp/presenced-compare-*)")
        p.add_argument("--no-build", action="store_true", help="use target/release binaries as they are")
        p.add_argument("--tree", action="store_true",
                       help="build the working tree (default: a clean git archive of HEAD)")
        p.add_argument("--patch", action="append",
                       help="apply this patch (-p1) to the HEAD export before building (repeatable; experiments)")
        p.add_argument("--presenced-bin", help="presenced binary to test (default target/release/presenced)")
        p.add_argument("--sipload-bin", help="sipload binary (default target/release/sipload)")
        p.add_argument("--shards", type=int, default=0, help="presenced shards = Kamailio workers (default nproc)")
        p.add_argument("--presenced-port", type=int, default=5281)
        p.add_argument("--kamailio-port", type=int, default=5280)

    def load(p):
        p.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
        p.add_argument("--warmup", type=float, default=1.0)
        p.add_argument("--rounds", type=int, default=2, help="rate searches per server (alternating)")
        p.add_argument("--factor", type=float, default=1.5, help="rate multiplier between search steps")
        p.add_argument("--max-steps", type=int, default=10)
        p.add_argument("--client-threads", type=int, default=1)
        p.add_argument("--timeout-ms", type=int, default=2000, help="sipload transaction timeout")
        p.add_argument("--publish-start", type=float, default=4000)
        p.add_argument("--subscribe-start", type=float, default=1000)
        p.add_argument("--fanout-start", type=float, default=60, help="PUBLISH/s (x watchers = NOTIFY/s)")
        p.add_argument("--fanout-shape", default="", help="PRESENTITIESxWATCHERS for fanout (default 20x50)")
        p.add_argument("--options-start", type=float, default=10000)

    p = sub.add_parser("run", help="side-by-side throughput and latency")
    common(p)
    load(p)
    p.add_argument("--scenarios", default="publish,subscribe,fanout,latency",
                   help="comma list of publish, subscribe, fanout, latency, options")
    p.add_argument("--latency-rate", type=float, default=0,
                   help="PUBLISH/s for the latency runs (default: half each server's own fan-out peak)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("render", help="print the table of a run's results.json again")
    p.add_argument("results")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("memory", help="bytes per presentity and per subscription")
    common(p)
    p.add_argument("presentities", type=int, nargs="?", default=10000)
    p.add_argument("subscriptions", type=int, nargs="?", default=10000)
    p.add_argument("--rate", type=int, default=2000, help="SIPp calls/s while loading")
    p.add_argument("--settle", type=float, default=12, help="seconds before each reading (tm wait timer)")
    p.set_defaults(func=cmd_memory)

    p = sub.add_parser("scaling", help="presenced throughput against --shards")
    common(p)
    load(p)
    p.add_argument("--shard-list", default=",".join(str(i) for i in range(1, (os.cpu_count() or 1) + 1)))
    p.add_argument("--scenarios", default="publish,fanout")
    p.set_defaults(func=cmd_scaling)

    args = ap.parse_args()
    if getattr(args, "fanout_shape", None):
        p, w = (int(x) for x in args.fanout_shape.lower().split("x"))
        SCENARIOS["fanout"] = ("fanout", ["--presentities", str(p), "--watchers", str(w)],
                               f"NOTIFY/s fan-out ({p} presentities x {w} watchers)", "NOTIFY/s")
    try:
        args.func(args)
    finally:
        stop_all()


if __name__ == "__main__":
    main()
