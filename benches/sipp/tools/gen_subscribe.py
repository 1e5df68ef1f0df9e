# generator for benches/sipp/subscribe.xml (kept in benches/sipp/tools/)
import sys
HDR_COMMON = """      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: <sip:watcher[call_number]@example.com>;tag=[pid]W[call_number]
      Call-ID: [call_id]"""
def req(cseq, ruri, to, expires):
    return f"""    <![CDATA[

      SUBSCRIBE {ruri} SIP/2.0
{HDR_COMMON}
      To: {to}
      CSeq: {cseq} SUBSCRIBE
      Contact: <sip:watcher[call_number]@[local_ip]:[local_port];transport=[transport]>
      Event: presence
      Accept: application/pidf+xml
      Expires: {expires}
      User-Agent: presenced-bench-sipp
      Content-Length: [len]

    ]]>"""
def ok200(via, frm, to, cid, cseq, attrs=""):
    return f"""  <send{attrs}>
    <![CDATA[

      SIP/2.0 200 OK
      {via}
      {frm}
      {to}
      {cid}
      {cseq}
      Contact: <sip:watcher[call_number]@[local_ip]:[local_port];transport=[transport]>
      User-Agent: presenced-bench-sipp
      Content-Length: 0

    ]]>
  </send>"""
LAST = ("[last_Via:]", "[last_From:]", "[last_To:]", "[last_Call-ID:]", "[last_CSeq:]")
SAVED = ("Via: [$nvia]", "From: [$nfrom]", "To: [$nto]", "Call-ID: [$ncid]", "CSeq: [$ncseq]")
DLG = """    <action>
      <ereg regexp=";[[:space:]]*tag=([^;>[:space:]]+)" search_in="hdr" header="To:" check_it="true" assign_to="m1,totag"/>
      <ereg regexp="sips?:[^>]+" search_in="hdr" header="Contact:" check_it="true" assign_to="rtarget"/>
    </action>"""
SAVE = """      <ereg regexp="[^[:space:]].*" search_in="hdr" header="Via:" check_it="true" assign_to="nvia"/>
      <ereg regexp="[^[:space:]].*" search_in="hdr" header="From:" check_it="true" assign_to="nfrom"/>
      <ereg regexp="[^[:space:]].*" search_in="hdr" header="To:" check_it="true" assign_to="nto"/>
      <ereg regexp="[^[:space:]].*" search_in="hdr" header="Call-ID:" check_it="true" assign_to="ncid"/>
      <ereg regexp="[^[:space:]].*" search_in="hdr" header="CSeq:" check_it="true" assign_to="ncseq"/>"""
def notify_actions(final, save):
    lines = ['    <action>',
             '      <ereg regexp="presence" search_in="hdr" header="Event:" check_it="true" assign_to="ev"/>']
    if final:
        # a late retransmission of the previous (active) NOTIFY may show up
        # here: answer it and keep waiting for the terminated one
        lines.append('      <ereg regexp="terminated" search_in="hdr" header="Subscription-State:" check_it="false" assign_to="term"/>')
    else:
        lines.append('      <ereg regexp="(active|pending)" search_in="hdr" header="Subscription-State:" check_it="true" assign_to="ss"/>')
    if save:
        lines.append(SAVE)
    lines.append('    </action>')
    return "\n".join(lines)
def phase(p, n, title, request, dlg, final, ntitle):
    def rr(code, nxt, optional=True):
        opt = ' optional="true"' if optional else ''
        if dlg:
            return f'  <recv response="{code}"{opt} rtd="{n}" response_txn="{p}" next="{nxt}">\n{dlg}\n  </recv>'
        return f'  <recv response="{code}"{opt} rtd="{n}" response_txn="{p}" next="{nxt}"/>'
    # All jumps ride on <send>/<recv> elements: SIPp does not always run a
    # <nop> placed right after a <send> at once, and a message arriving in
    # that gap is "unexpected".  So no <nop> anywhere.
    if final:
        ok_saved = ok200(*SAVED, attrs=f' test="term" next="{p}_done"')
        wait_attrs = f' test="term" next="{p}_last"'
        ok_wait = ok200(*LAST, attrs=f' next="{p}_wait"') + f"""

  <label id="{p}_last"/>
""" + ok200(*LAST)
    else:
        ok_saved = ok200(*SAVED, attrs=f' next="{p}_done"')
        wait_attrs = ''
        ok_wait = ok200(*LAST)
    return f"""
  <!-- ===== {title} ===== -->
  <send retrans="500" start_rtd="{n}" start_txn="{p}">
{request}
  </send>

  <!-- usual order: the 2xx first (200; 202 from older peers) -->
{rr(200, p+"_resp_first")}
{rr(202, p+"_resp_first")}

  <!-- other order: {ntitle} before the 2xx.  SIPp sends nothing while the
       SUBSCRIBE is unanswered (retransmission pending), so keep the NOTIFY's
       headers and answer it once the 2xx is in. -->
  <recv request="NOTIFY">
{notify_actions(final, True)}
  </recv>
{rr(202, p+"_answer")}
{rr(200, p+"_answer", optional=False)}
  <label id="{p}_answer"/>
{ok_saved}

  <label id="{p}_resp_first"/>
  <label id="{p}_wait"/>
  <recv request="NOTIFY"{wait_attrs}>
{notify_actions(final, False)}
  </recv>
{ok_wait}

  <label id="{p}_done"/>
"""
out = ["""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!--
  Presence watcher dialog (RFC 6665 / RFC 3856), one dialog per call:
    watcher  sip:watcher[call_number]@example.com
    target   sip:[service][call_number]@example.com   (sipp -s sets [service])
    1. SUBSCRIBE (Event: presence, Accept: application/pidf+xml, Expires: 600)
         -> 200 (202 also accepted) and a NOTIFY (Subscription-State active|pending) -> we answer 200
    2. in-dialog refresh SUBSCRIBE (To-tag and Request-URI = Contact of the 2xx)
         -> 200/202 and a NOTIFY (active|pending) -> 200
    3. un-SUBSCRIBE (Expires: 0)
         -> 200/202 and a NOTIFY with Subscription-State: terminated -> 200
  In every step the NOTIFY may arrive before or after the 2xx:
  - 2xx first: an optional 2xx recv with next= jumps to the NOTIFY wait;
  - NOTIFY first: its Via/From/To/Call-ID/CSeq are saved (SIPp will not send
    while the SUBSCRIBE is unanswered), the 2xx is awaited, then the NOTIFY
    is answered from the saved headers (single Via: the peer is the server
    itself, no proxy in between).
  The 2xx are tied to their SUBSCRIBE by transaction (start_txn/response_txn).
  In step 3 a late retransmission of the step-2 NOTIFY (still "active") is
  answered and the wait for the terminated NOTIFY goes on.
  Every NOTIFY must carry Event: presence.
  Generated by tools/gen_subscribe.py: edit the generator, not this file.
-->
<scenario name="subscribe">"""]
out.append(phase("sub", 1, "1. initial SUBSCRIBE",
    req(1, "sip:[service][call_number]@example.com", "<sip:[service][call_number]@example.com>", 600),
    DLG, False, "the first NOTIFY"))
out.append(phase("ref", 2, "2. refresh SUBSCRIBE (in dialog)",
    req(2, "[$rtarget]", "<sip:[service][call_number]@example.com>;tag=[$totag]", 600),
    None, False, "the refresh NOTIFY"))
out.append(phase("uns", 3, "3. un-SUBSCRIBE (Expires: 0)",
    req(3, "[$rtarget]", "<sip:[service][call_number]@example.com>;tag=[$totag]", 0),
    None, True, "the final NOTIFY"))
out.append("""  <Reference variables="m1,ev,ss"/>

  <ResponseTimeRepartition value="1, 2, 5, 10, 20, 50, 100, 200, 500, 1000"/>
</scenario>
""")
dst = sys.argv[1] if len(sys.argv) > 1 else "subscribe.xml"
open(dst, "w").write("\n".join(out))
