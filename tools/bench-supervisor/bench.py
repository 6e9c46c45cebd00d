"""The supervisor benchmark (scripts/bench-supervisor.sh): `tap run` committing big
checkpoints while its training process prints a line per millisecond, and an interruption
notice sent into the last commit (1 s after its mark, or halfway for commits under 2 s). For each store (the local store; the stack with S3 on
s3s-fs and the rest on moto), each checkpoint size, and two tap binaries (the previous
version and this one, measured in the same run), it reports:

  notice -> child signal latency (median, max over the notices), the child's worst stdout
  write stall during a commit, the commit time (mark -> LATEST moved, median), and the
  planner's forecast (after the second checkpoint) against the measured third commit.

Everything is on loopback; every wait is bounded.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench-common"))
from bench_stack import BUCKET, KEY, SECRET, free_port, make_stack, wait_port  # noqa: E402

CHILD = os.path.join(HERE, "child.py")
CHECKPOINTS = 3
RUN_LIMIT_S = 900


class Stack:
    """moto (DynamoDB, SSM, CloudWatch Logs) and s3s-fs (S3), and a tap config importing them."""

    def __init__(self, work, moto_server, s3s_fs):
        self.work, self.procs = work, []
        self.moto_port, self.s3_port = free_port(), free_port()
        self.s3_root = os.path.join(work, "s3")
        os.makedirs(os.path.join(self.s3_root, BUCKET))
        devnull = subprocess.DEVNULL
        self.procs.append(subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(self.moto_port)], stdout=devnull, stderr=devnull))
        self.procs.append(subprocess.Popen(
            [s3s_fs, "--host", "127.0.0.1", "--port", str(self.s3_port), "--access-key", KEY, "--secret-key", SECRET, self.s3_root],
            stdout=devnull, stderr=devnull))
        wait_port(self.moto_port, "moto")
        wait_port(self.s3_port, "s3s-fs")
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.moto_port}",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "TAP_CONFIG": os.path.join(work, "config.toml"),
        }
        self.outputs = make_stack(work, self.env["AWS_ENDPOINT_URL"])

    def import_into(self, tap, env):
        subprocess.run([tap, "stack", "import", self.outputs], env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)

    def latest(self, experiment):
        return os.path.join(self.s3_root, BUCKET, "tap/checkpoints", experiment, "LATEST")

    def close(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def one_run(tap, store, stack, size, work, n):
    home = os.path.join(work, f"home-{n}")
    env = dict(os.environ, TAP_HOME=home, TAP_OUTPUT="text")
    experiment = f"bench-{n}"
    if store == "s3":
        env.update(stack.env)
        stack.import_into(tap, env)
        latest = stack.latest(experiment)
    else:
        env["TAP_CONFIG"] = os.path.join(work, "no-stack.toml")
        latest = os.path.join(home, "artifacts/checkpoints", experiment, "LATEST")
    result, marks, log = (os.path.join(work, f"{name}-{n}") for name in ("result.json", "marks", "tap.log"))
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [tap, "run", "-e", experiment, "--", sys.executable, CHILD, str(size), str(CHECKPOINTS), latest, result, marks],
            env=env, stdout=subprocess.DEVNULL, stderr=err)
        until = time.time() + RUN_LIMIT_S
        lines = []
        while time.time() < until and proc.poll() is None:
            lines = open(marks).read().split("\n") if os.path.exists(marks) else []
            if any(l.startswith(f"{CHECKPOINTS} ") for l in lines):
                break
            time.sleep(0.01)
        # Into the last commit: 1 s (the reproduction), or halfway through a commit
        # as long as the one before when commits are shorter than 2 s.
        before = [float(l.split()[2]) for l in lines if l.startswith(f"commit {CHECKPOINTS - 1} ") and l.split()[2] != "None"]
        time.sleep(min(1.0, before[0] / 2) if before else 1.0)
        sent = time.time()
        proc.send_signal(signal.SIGUSR1)
        try:
            proc.wait(timeout=RUN_LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            sys.exit(f"bench: tap run did not end within {RUN_LIMIT_S} s (log: {log})")
    if not os.path.exists(result):
        sys.exit(f"bench: the child wrote no result (tap exited {proc.returncode}; log: {log})")
    r = json.load(open(result))
    text = open(log, errors="replace").read()
    forecast = re.search(r"checkpoint \S+-0002 committed .*a final checkpoint would take ~([0-9.]+) s", text)
    shutil.rmtree(home, ignore_errors=True)
    if store == "s3":
        shutil.rmtree(os.path.join(stack.s3_root, BUCKET, "tap"), ignore_errors=True)
    return {
        "latency_ms": (r["notice_received"] - sent) * 1000 if r["notice_received"] else None,
        "stall_ms": max(r["stall_s"]) * 1000,
        "commit_s": [c for c in r["commit_s"] if c is not None],
        "last_commit_s": r["commit_s"][-1],
        "forecast_s": float(forecast.group(1)) if forecast else None,
        "exit": proc.returncode,
    }


def summary(runs):
    lat = [r["latency_ms"] for r in runs if r["latency_ms"] is not None]
    commits = [c for r in runs for c in r["commit_s"]]
    errs = [abs(r["forecast_s"] - r["last_commit_s"]) / r["last_commit_s"] * 100
            for r in runs if r["forecast_s"] is not None and r["last_commit_s"]]
    return {
        "notices": len(runs), "latency_median_ms": statistics.median(lat) if lat else None, "latency_max_ms": max(lat) if lat else None,
        "stall_max_ms": max(r["stall_ms"] for r in runs), "commit_median_s": statistics.median(commits) if commits else None,
        "forecast_error_max_pct": max(errs) if errs else None,
        "forecast_s": [r["forecast_s"] for r in runs], "measured_s": [r["last_commit_s"] for r in runs],
    }


def fmt(v, unit=""):
    return "-" if v is None else f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--this", required=True)
    ap.add_argument("--previous", required=True)
    ap.add_argument("--sizes-mib", default="256,2048")
    ap.add_argument("--notices", type=int, default=5)
    ap.add_argument("--stores", default="local,s3")
    ap.add_argument("--moto-server")
    ap.add_argument("--s3s-fs")
    ap.add_argument("--json")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tap-bench-supervisor-")
    stores = a.stores.split(",")
    stack = Stack(work, a.moto_server, a.s3s_fs) if "s3" in stores else None
    rows = []
    try:
        for store in stores:
            for mib in (int(s) for s in a.sizes_mib.split(",")):
                cell = {}
                for version, tap in (("previous", a.previous), ("this", a.this)):
                    runs = [one_run(tap, store, stack, mib << 20, work, f"{store}-{mib}-{version}-{i}") for i in range(a.notices)]
                    cell[version] = summary(runs)
                    print(f"bench: {store} {mib} MiB {version}: {json.dumps(cell[version])}", file=sys.stderr, flush=True)
                rows.append((store, mib, cell))
    finally:
        if stack:
            stack.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"supervisor benchmark: {a.notices} notices per cell, {CHECKPOINTS} checkpoints per run, a line per ms on stdout")
    print(f"{'store':<6} {'size':>8} {'version':<9} {'notice->child ms (median/max)':>30} {'worst stall ms':>15} {'commit s':>9} {'forecast err %':>15}")
    for store, mib, cell in rows:
        for version in ("previous", "this"):
            c = cell[version]
            print(f"{store:<6} {mib:>4} MiB {version:<9} {fmt(c['latency_median_ms']) + ' / ' + fmt(c['latency_max_ms']):>30} "
                  f"{fmt(c['stall_max_ms']):>15} {fmt(c['commit_median_s']):>9} {fmt(c['forecast_error_max_pct']):>15}")
        p, t = cell["previous"], cell["this"]
        ratio = lambda k: fmt(p[k] / t[k], "x") if p[k] and t[k] else "-"
        print(f"{'':<6} {'':>8} {'ratio':<9} {'latency ' + ratio('latency_max_ms'):>30} {ratio('stall_max_ms'):>15} "
              f"{ratio('commit_median_s'):>9}   (previous / this; commit >= 1.0x is no worse)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"store": s, "size_mib": m, **c} for s, m, c in rows], f, indent=1)


if __name__ == "__main__":
    main()
