"""What the benchmarks share (tools/bench-*/bench.py): loopback ports, and a stack's
DynamoDB table, log group and `terraform output -json` for `tap stack import`, made on a
local moto. Every wait is bounded."""

import json
import os
import socket
import sys
import time

BUCKET, TABLE, GROUP = "ml-model-artifacts-dev", "tap-dev-experiments", "/tap/dev/training"
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../crates/tap-cli/tests/fixtures/tap_config.json")
#: The credentials every benchmark gives moto (and s3s-fs).
KEY, SECRET = "bench", "benchsecret"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, limit_s=30):
    until = time.time() + limit_s
    while time.time() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"bench: {what} did not start on 127.0.0.1:{port}")


def client_kwargs(endpoint):
    return dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)


def make_stack(work, endpoint):
    """The stack's table and log group on the moto at `endpoint`; the outputs file that
    `tap stack import` reads."""
    import boto3  # moto's environment has it

    kw = client_kwargs(endpoint)
    boto3.client("dynamodb", **kw).create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("experiment_id", "run_id")],
        KeySchema=[{"AttributeName": "experiment_id", "KeyType": "HASH"}, {"AttributeName": "run_id", "KeyType": "RANGE"}])
    boto3.client("logs", **kw).create_log_group(logGroupName=GROUP)
    outputs = os.path.join(work, "outputs.json")
    with open(FIXTURE) as f, open(outputs, "w") as o:
        json.dump({"tap_config": {"value": json.load(f), "type": [], "sensitive": False}}, o)
    return outputs
