#!/usr/bin/env python3
"""A node's SSM agent, as a stand-in for the tests: runs the Run Command scripts that moto
(tools/moto/tap_moto_server.py with TAP_MOTO_SSM_AGENTS) holds for one instance, and reports
each invocation's status back, as amazon-ssm-agent does on a real node.

Standard library only. Usage:

    ssm_node.py --endpoint http://127.0.0.1:PORT --instance i-... --config PATH \
                --log-dir DIR [--max-seconds 900]

What it does, every 0.2 s (bounded by --max-seconds):
- lists the commands for its instance (ListCommands) and starts each new `Pending` one:
  the AWS-RunShellScript `commands`, run by bash in a session of its own, with this process's
  environment (the test gives it the node's: TAP_RUNTIME_DIR, PATH with tap, the endpoint);
  reports `InProgress`, then `Success` or `Failed` with the exit status;
- when an invocation turns `Cancelled` (CancelCommand), sends SIGTERM to the script's
  process group and SIGKILL to its whole session 15 s later, as the agent stops a cancelled
  command;
- on SIGTERM itself (the test terminates the node), kills every session it started at once:
  a node that goes away takes its processes with it.

The scripts are tap's own (tap_fleet::launch::script) with three rewrites, because the test's
"nodes" are directories on one machine, not hosts: `exec runuser -u USER -- ` becomes `exec `
(no other users here), the node's tap config path /etc/tap/config.toml becomes --config, and
`bash -lc` becomes `bash -c` (a login shell would reset PATH).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request


def call(endpoint, action, body):
    req = urllib.request.Request(
        endpoint + "/",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"AmazonSSM.{action}",
            "Authorization": "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0",
            "User-Agent": "ssm-node-standin app/ssm-node",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def try_call(endpoint, action, body):
    """`call`, or None after printing why (moto busy, a hiccup): the loop tries again."""
    try:
        return call(endpoint, action, body)
    except Exception as e:
        print(f"ssm_node: {action}: {e}", file=sys.stderr, flush=True)
        return None


def session_pids(sid):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # field 6: session id
                pids.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return pids


def kill_session(sid, sig):
    for pid in session_pids(sid):
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--instance", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--log-dir", required=True)
    ap.add_argument("--max-seconds", type=float, default=900)
    a = ap.parse_args()
    os.makedirs(a.log_dir, exist_ok=True)
    running = {}  # command id -> [Popen, cancelled_at or None]
    seen = set()
    gone = {"now": False}

    def on_term(signum, frame):
        gone["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    end = time.time() + a.max_seconds
    polls = 0
    while time.time() < end and not gone["now"]:
        polls += 1
        listed = try_call(a.endpoint, "ListCommands", {"InstanceId": a.instance})
        if listed is None:
            time.sleep(0.5)
            continue
        for c in listed.get("Commands", []):
            cid = c["CommandId"]
            if cid in seen:
                continue
            inv = try_call(a.endpoint, "GetCommandInvocation", {"CommandId": cid, "InstanceId": a.instance})
            if inv is None:
                continue
            seen.add(cid)
            if inv.get("Status") != "Pending":
                continue
            script = "\n".join(c.get("Parameters", {}).get("commands", []))
            script = re.sub(r"exec runuser -u \S+ -- ", "exec ", script)
            script = script.replace("/etc/tap/config.toml", a.config).replace("bash -lc ", "bash -c ")
            log = open(os.path.join(a.log_dir, f"{cid}.log"), "wb")
            p = subprocess.Popen(["/bin/bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            running[cid] = [p, None]
            try_call(a.endpoint, "TapReportInvocation", {"CommandId": cid, "InstanceId": a.instance, "Status": "InProgress"})
        for cid, entry in list(running.items()):
            p, cancelled_at = entry
            rc = p.poll()
            if rc is not None:
                if cancelled_at is None:
                    status = "Success" if rc == 0 else "Failed"
                    report = {"CommandId": cid, "InstanceId": a.instance, "Status": status, "ResponseCode": rc}
                    if try_call(a.endpoint, "TapReportInvocation", report) is None:
                        continue  # reported next round
                kill_session(p.pid, signal.SIGKILL)  # anything the script left behind
                del running[cid]
                continue
            if cancelled_at is None and polls % 5 == 0:
                inv = try_call(a.endpoint, "GetCommandInvocation", {"CommandId": cid, "InstanceId": a.instance})
                if inv is not None and inv.get("Status") == "Cancelled":
                    entry[1] = time.time()
                    try:
                        os.killpg(p.pid, signal.SIGTERM)
                    except OSError:
                        pass
            elif cancelled_at is not None and time.time() - cancelled_at > 15:
                kill_session(p.pid, signal.SIGKILL)
        time.sleep(0.2)
    for p, _ in running.values():
        kill_session(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
