#!/usr/bin/env python3
"""Hostile-client load for the benchmark in benches/README.md ("Idle and
half-open connections"): `hold` keeps N idle TCP connections open on the SIP
port and M half-open HTTP connections (a request head that never ends) on the
management plane, reopening any the server closes (at most 2,000 reopenings
per second), for a bounded time; `scrape` times GET /metrics on fresh
connections. Loopback targets only; standard library only."""

import argparse
import ipaddress
import selectors
import socket
import statistics
import sys
import time

HALF_OPEN = b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Slow: "


def loopback(text):
    host, port = text.rsplit(":", 1)
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        raise argparse.ArgumentTypeError("only loopback targets")
    return (host.strip("[]"), int(port))


def open_one(addr, payload):
    sock = socket.create_connection(addr, timeout=2)
    if payload:
        sock.sendall(payload)
    sock.setblocking(False)
    return sock


def hold(args):
    sel = selectors.DefaultSelector()
    wanted = [(args.sip, b"", args.sip_conns), (args.mgmt, HALF_OPEN, args.mgmt_conns)]
    open_count = {}
    reopened = 0
    failed = 0
    deadline = time.monotonic() + args.duration
    budget_start, budget_used = time.monotonic(), 0
    while time.monotonic() < deadline:
        for index, (addr, payload, count) in enumerate(wanted):
            while open_count.get(index, 0) < count:
                now = time.monotonic()
                if now - budget_start >= 1.0:
                    budget_start, budget_used = now, 0
                if budget_used >= 2000:
                    break
                budget_used += 1
                try:
                    sock = open_one(addr, payload)
                except OSError:
                    failed += 1
                    break
                sel.register(sock, selectors.EVENT_READ, index)
                open_count[index] = open_count.get(index, 0) + 1
        for key, _ in sel.select(timeout=0.05):
            sock, index = key.fileobj, key.data
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:  # closed by the server: reopen on the next pass
                sel.unregister(sock)
                sock.close()
                open_count[index] -= 1
                reopened += 1
    print(f"hold: {args.sip_conns} SIP + {args.mgmt_conns} HTTP wanted, reopened {reopened}, connect failures {failed}",
          file=sys.stderr)


def scrape(args):
    times = []
    failures = 0
    errors = {}
    for _ in range(args.count):
        start = time.monotonic()
        try:
            sock = socket.create_connection(args.mgmt, timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            sock.close()
            answer = b"".join(chunks)
            ok = answer.startswith(b"HTTP/1.1 200")
            if not ok:
                errors[answer[:12].decode(errors="replace") or "closed without an answer"] = errors.get(answer[:12].decode(errors="replace") or "closed without an answer", 0) + 1
        except OSError as error:
            ok = False
            errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
        elapsed = (time.monotonic() - start) * 1000
        if ok:
            times.append(elapsed)
        else:
            failures += 1
        time.sleep(args.interval)
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")
    print(f"scrape: {len(times)} ok, {failures} failed, ms p50 {p(0.5):.2f} p90 {p(0.9):.2f} "
          f"max {max(times) if times else float('nan'):.2f} mean {statistics.mean(times) if times else float('nan'):.2f}"
          + (f" failures: {errors}" if errors else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--sip", type=loopback, required=True)
    h.add_argument("--mgmt", type=loopback, required=True)
    h.add_argument("--sip-conns", type=int, default=1000)
    h.add_argument("--mgmt-conns", type=int, default=500)
    h.add_argument("--duration", type=float, default=20)
    s = sub.add_parser("scrape")
    s.add_argument("--mgmt", type=loopback, required=True)
    s.add_argument("--count", type=int, default=50)
    s.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    {"hold": hold, "scrape": scrape}[args.command](args)


if __name__ == "__main__":
    main()
