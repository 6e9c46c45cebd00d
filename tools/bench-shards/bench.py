"""The sharded-checkpoint benchmark (scripts/bench-shards.sh): a job of N ranks (1, 2, 4),
one `tap run --group` per rank on this machine, each rank writing a shard of the same size
after the interruption notice; against the same state gathered on rank 0 (one `tap run`
storing N shards' bytes), measured in the same run, on the local store and on S3 (moto), all
on loopback. It reports, per N:

  notice -> the job's commit (the step commit's committed_ms; gathered: its manifest's
  created_ms), the commit's own latency after the last shard landed (committed_ms - the
  newest shard manifest's created_ms), and the ratio gathered / sharded.

Every wait is bounded.
"""

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench-common"))
from bench_stack import BUCKET, KEY, SECRET, client_kwargs, free_port, make_stack, wait_port  # noqa: E402

RANK = os.path.join(HERE, "rank.py")
LIMIT_S = 600


class Moto:
    """moto (S3, DynamoDB, SSM, CloudWatch Logs) and a stack config importing it."""

    def __init__(self, work, moto_server):
        import boto3  # moto's environment has it

        port = free_port()
        self.proc = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, "moto")
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "TAP_CONFIG": os.path.join(work, "config.toml"),
        }
        self.outputs = make_stack(work, self.env["AWS_ENDPOINT_URL"])
        self.s3 = boto3.client("s3", **client_kwargs(self.env["AWS_ENDPOINT_URL"]))
        self.s3.create_bucket(Bucket=BUCKET)

    def read(self, key):
        return json.loads(self.s3.get_object(Bucket=BUCKET, Key="tap/" + key)["Body"].read())

    def keys(self, prefix):
        out = self.s3.list_objects_v2(Bucket=BUCKET, Prefix="tap/" + prefix).get("Contents", [])
        return [o["Key"][len("tap/"):] for o in out]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Local:
    def __init__(self, home):
        self.root = os.path.join(home, "artifacts")

    def read(self, key):
        with open(os.path.join(self.root, key)) as f:
            return json.load(f)

    def keys(self, prefix):
        return [p[len(self.root) + 1:] for p in glob.glob(os.path.join(self.root, prefix) + "*") if os.path.isfile(p)]


def one(tap, env, store, experiment, ranks, shard_bytes, sharded, work):
    """Starts the ranks (or one gathered run), sends the notice once all are ready; the
    notice time and what the store says of the commit."""
    procs, ready = [], []
    for r in range(ranks if sharded else 1):
        flag = os.path.join(work, f"ready-{experiment}-{r}")
        ready.append(flag)
        e = dict(env, BENCH_READY=flag, BENCH_SHARD_BYTES=str(shard_bytes * (1 if sharded else ranks)))
        args = [tap, "run", "-e", experiment]
        if sharded:
            args += ["--group", "g", "--rank", str(r), "--world-size", str(ranks)]
        procs.append(subprocess.Popen(args + ["--", sys.executable, RANK], env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    until = time.time() + LIMIT_S
    while not all(os.path.exists(f) for f in ready):
        if time.time() > until or any(p.poll() is not None for p in procs):
            sys.exit(f"bench: a rank did not start: {[p.stderr.read().decode() for p in procs if p.poll() is not None]}")
        time.sleep(0.01)
    t0 = time.time() * 1000
    for p in procs:
        p.send_signal(signal.SIGUSR1)
    for p in procs:
        _, err = p.communicate(timeout=LIMIT_S)
        if p.returncode != 75:
            sys.exit(f"bench: tap run exited {p.returncode}: {err.decode()}")
    ck = "checkpoints/" + experiment
    if sharded:
        commits = [k for k in store.keys(f"{ck}/commits/g/") if k.endswith(".json")]
        if len(commits) != 1:
            sys.exit(f"bench: {len(commits)} commits of {experiment}")
        commit = store.read(commits[0])
        landed = max(store.read(s["manifest"])["manifest"]["created_ms"] for s in commit["shards"])
        return commit["committed_ms"] - t0, commit["committed_ms"] - landed
    manifests = store.keys(f"{ck}/manifests/")
    if len(manifests) != 1:
        sys.exit(f"bench: {len(manifests)} manifests of {experiment}")
    return store.read(manifests[0])["created_ms"] - t0, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tap", required=True)
    ap.add_argument("--moto-server")
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--shard-mib", type=int, default=128)
    ap.add_argument("--stores", default="local,s3")
    ap.add_argument("--json")
    a = ap.parse_args()
    shard = a.shard_mib << 20
    figures = []
    for store_name in a.stores.split(","):
        work = tempfile.mkdtemp(prefix="tap-bench-shards-")
        home = os.path.join(work, "home")
        env = dict(os.environ, TAP_HOME=home)
        for v in ("TAP_RUN_GROUP", "TAP_JOB_ATTEMPT", "RANK", "WORLD_SIZE", "NODE_RANK", "NNODES", "TAP_EXPERIMENT"):
            env.pop(v, None)
        moto = None
        if store_name == "s3":
            moto = Moto(work, a.moto_server)
            env.update(moto.env)
            subprocess.run([a.tap, "stack", "import", moto.outputs], env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
            store = moto
        else:
            store = Local(home)
        try:
            for n in [int(x) for x in a.ranks.split(",")]:
                sharded, latency = one(a.tap, env, store, f"sharded{n}", n, shard, True, work)
                gathered, _ = one(a.tap, env, store, f"gathered{n}", n, shard, False, work)
                figures.append({"store": store_name, "ranks": n, "shard_mib": a.shard_mib,
                                "notice_to_commit_s": sharded / 1000, "commit_latency_s": latency / 1000,
                                "gathered_notice_to_commit_s": gathered / 1000})
        finally:
            if moto:
                moto.close()
            shutil.rmtree(work, ignore_errors=True)
    print(f"sharded checkpoints: {a.shard_mib} MiB per rank, notice sent to every rank at once; "
          "gathered: one tap run storing every rank's bytes")
    print(f"{'store':6} {'ranks':>5} {'notice->commit':>15} {'commit after last shard':>24} {'gathered on rank 0':>19} {'gathered/sharded':>17}")
    for f in figures:
        print(f"{f['store']:6} {f['ranks']:>5} {f['notice_to_commit_s']:>14.2f}s {f['commit_latency_s']:>23.3f}s "
              f"{f['gathered_notice_to_commit_s']:>18.2f}s {f['gathered_notice_to_commit_s'] / f['notice_to_commit_s']:>16.2f}x")
    if a.json:
        with open(a.json, "w") as o:
            json.dump(figures, o, indent=2)


if __name__ == "__main__":
    main()
