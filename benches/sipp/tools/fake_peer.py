#!/usr/bin/env python3
"""Minimal misbehaving presence peer to self-test the SIPp scenarios (UDP, loopback).

Not a presence server: it answers just enough for options/publish/register/
subscribe to run, with switches that reproduce the awkward-but-legal orders a
real server may produce, so the scenarios' branches get exercised:

  --notify-first   send the NOTIFY before the 2xx to SUBSCRIBE
  --code-202       answer SUBSCRIBE with 202 instead of 200
  --dup-notify     in-dialog SUBSCRIBE: also re-send the previous NOTIFY late
  --same-etag      answer PUBLISH refreshes with the old SIP-ETag (the
                   publish scenario must then FAIL)
  --seconds N      exit after N seconds (default 30)

  python3 benches/sipp/tools/fake_peer.py 127.0.0.1:5099 --notify-first &
  benches/sipp/run.sh 127.0.0.1:5099 subscribe 50 200
"""
import argparse, re, socket, time, itertools

ap = argparse.ArgumentParser()
ap.add_argument("addr")
ap.add_argument("--notify-first", action="store_true")
ap.add_argument("--code-202", action="store_true")
ap.add_argument("--dup-notify", action="store_true")
ap.add_argument("--same-etag", action="store_true")
ap.add_argument("--seconds", type=float, default=30)
a = ap.parse_args()
ip, port = a.addr.rsplit(":", 1)
assert ip.startswith("127.") or ip == "::1", "loopback only"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((ip, int(port)))
s.settimeout(0.2)
seq = itertools.count(1)
dialogs = {}   # call-id -> dict(cseq, last_notify, target, addr)

def hdr(msg, name):
    m = re.search(r"^" + name + r"[ \t]*:[ \t]*(.*?)\r$", msg, re.M | re.I)
    return m.group(1) if m else ""

def reply(msg, addr, code, reason, extra="", totag=None):
    to = hdr(msg, "To")
    if totag and ";tag=" not in to:
        to += ";tag=" + totag
    vias = "".join("Via: %s\r\n" % v for v in re.findall(r"^Via[ \t]*:[ \t]*(.*?)\r$", msg, re.M))
    r = ("SIP/2.0 %d %s\r\n%sFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\n%sContent-Length: 0\r\n\r\n"
         % (code, reason, vias, hdr(msg, "From"), to, hdr(msg, "Call-ID"), hdr(msg, "CSeq"), extra))
    s.sendto(r.encode(), addr)

def notify(d, state):
    d["cseq"] += 1
    body = ('<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="%s"/>' % d["pres"]) \
        if not state.startswith("terminated") else ""
    m = ("NOTIFY %s SIP/2.0\r\nVia: SIP/2.0/UDP %s:%s;branch=z9hG4bKfp%d\r\nMax-Forwards: 70\r\n"
         "From: <%s>;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d NOTIFY\r\nContact: <sip:%s:%s>\r\n"
         "Event: presence\r\nSubscription-State: %s\r\n%sContent-Length: %d\r\n\r\n%s"
         % (d["target"], ip, port, next(seq), d["pres"], d["totag"], d["from"], d["cid"], d["cseq"], ip, port,
            state, "Content-Type: application/pidf+xml\r\n" if body else "", len(body), body))
    d["last_notify"] = m
    s.sendto(m.encode(), d["addr"])

end = time.time() + a.seconds
while time.time() < end:
    try:
        data, addr = s.recvfrom(65535)
    except socket.timeout:
        continue
    msg = data.decode("latin-1")
    if msg.startswith("SIP/2.0"):
        continue                      # 200 to our NOTIFY
    method = msg.split(" ", 1)[0]
    if method in ("OPTIONS", "REGISTER"):
        reply(msg, addr, 200, "OK", totag="fp")
    elif method == "PUBLISH":
        etag = "e%d" % next(seq)
        if a.same_etag and hdr(msg, "SIP-If-Match"):
            etag = hdr(msg, "SIP-If-Match")
        reply(msg, addr, 200, "OK", "SIP-ETag: %s\r\nExpires: %s\r\n" % (etag, hdr(msg, "Expires") or "3600"), totag="fp")
    elif method == "SUBSCRIBE":
        cid = hdr(msg, "Call-ID")
        d = dialogs.get(cid)
        if d is None:
            d = dialogs[cid] = dict(cseq=0, last_notify=None, cid=cid, addr=addr, totag="fp%d" % next(seq),
                                    target=re.search(r"<([^>]+)>", hdr(msg, "Contact")).group(1),
                                    pres=re.search(r"<([^>]+)>", hdr(msg, "To")).group(1), **{"from": hdr(msg, "From")})
        exp = int(hdr(msg, "Expires") or "600")
        state = "active;expires=%d" % exp if exp else "terminated;reason=timeout"
        code = 202 if a.code_202 else 200
        prev = d["last_notify"]
        contact = "Contact: <sip:%s:%s>\r\nExpires: %d\r\n" % (ip, port, exp)
        if a.notify_first:
            notify(d, state)
            reply(msg, addr, code, "OK" if code == 200 else "Accepted", contact, totag=d["totag"])
        else:
            reply(msg, addr, code, "OK" if code == 200 else "Accepted", contact, totag=d["totag"])
            notify(d, state)
        if a.dup_notify and prev:
            time.sleep(0.01)
            s.sendto(prev.encode(), addr)     # stale NOTIFY of the previous step
        if not exp:
            dialogs.pop(cid, None)
    else:
        reply(msg, addr, 501, "Not Implemented")
