#!/usr/bin/env python3
"""Makes the store fixtures of a tap release: a local store (SQLite and its checkpoint
objects) and the experiment table's items (DynamoDB JSON, from moto), written by THAT release.

    scripts/make-store-fixtures.py TAP_BINARY OUT_DIR

The scenario, on both backends, in experiment `legacy`:
  - run A is interrupted (SIGUSR1) after some checkpoints;
  - `tap run --resume` continues it: run B (the release's resume made a new record, B
    `resumed_from` A), which finishes;
  - run C is interrupted and never resumed.
A newer tap must read them (A and B as one training, C resumable). The fixture in
crates/tap-cli/tests/fixtures/store-v1 was made by commit b29948d (format 1) with
TAP_MOTO_SERVER from scripts/tools.sh.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import boto3

tap, out = sys.argv[1], os.path.abspath(sys.argv[2])
repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
train = os.path.join(repo, "examples", "train.py")


def scenario(env):
    def tap_(*args, check=True):
        r = subprocess.run([tap, *args], env=env, capture_output=True, text=True, timeout=300)
        if check and r.returncode != 0:
            sys.exit(f"{args}: {r.returncode} {r.stderr}")
        return r

    for k, v in [("learning_rate", "0.1"), ("epochs", "1"), ("steps_per_epoch", "40"), ("checkpoint_every", "5")]:
        tap_("params", "set", k, v)

    def interrupted():
        p = subprocess.Popen([tap, "run", "-e", "legacy", "--", "python3", train], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2.5)
        p.send_signal(signal.SIGUSR1)
        _, err = p.communicate(timeout=120)
        if p.returncode != 75:
            sys.exit(f"not interrupted ({p.returncode}): {err}")

    interrupted()
    tap_("run", "-e", "legacy", "--resume", "--", "python3", train)
    interrupted()


env = dict(os.environ, TAP_EXAMPLE_STEP_SECONDS="0.1", AWS_EC2_METADATA_DISABLED="true")
env.pop("TAP_OUTPUT", None)

# The local store.
home = os.path.join(out, "local")
shutil.rmtree(home, ignore_errors=True)
scenario(dict(env, TAP_HOME=home, TAP_CONFIG=os.path.join(out, "no-config.toml")))
import sqlite3
db = sqlite3.connect(os.path.join(home, "tap.db"))
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
db.close()
shutil.rmtree(os.path.join(home, "runs"), ignore_errors=True)

# The stack's table, from moto.
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
moto = subprocess.Popen([os.environ["TAP_MOTO_SERVER"], "-H", "127.0.0.1", "-p", str(port)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    endpoint = f"http://127.0.0.1:{port}"
    aws = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    for _ in range(300):
        try:
            boto3.client("dynamodb", **aws).list_tables()
            break
        except Exception:
            time.sleep(0.1)
    ddb = boto3.client("dynamodb", **aws)
    ddb.create_table(TableName="tap-dev-experiments", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("experiment_id", "run_id")],
                     KeySchema=[{"AttributeName": "experiment_id", "KeyType": "HASH"}, {"AttributeName": "run_id", "KeyType": "RANGE"}])
    boto3.client("s3", **aws).create_bucket(Bucket="ml-model-artifacts-dev")
    boto3.client("logs", **aws).create_log_group(logGroupName="/tap/dev/training")
    with tempfile.TemporaryDirectory() as d:
        senv = dict(env, TAP_HOME=os.path.join(d, "home"), TAP_CONFIG=os.path.join(d, "config.toml"),
                    AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
        cfg = os.path.join(repo, "crates", "tap-cli", "tests", "fixtures", "tap_config.json")
        subprocess.run([tap, "stack", "import", cfg], env=senv, check=True, capture_output=True)
        scenario(senv)
    items = []
    for page in ddb.get_paginator("scan").paginate(TableName="tap-dev-experiments"):
        items.extend(page["Items"])
    items.sort(key=lambda i: (i["experiment_id"]["S"], i["run_id"]["S"]))
    with open(os.path.join(out, "dynamodb-items.json"), "w") as f:
        json.dump(items, f, indent=1, sort_keys=True)
finally:
    moto.terminate()
    moto.wait()
print(f"fixtures in {out}")
