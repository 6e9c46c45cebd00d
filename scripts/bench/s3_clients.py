#!/usr/bin/env python3
"""The competitors of `tap`'s transfers, for crates/tap-cli/benches/transfer.rs.

    s3_clients.py boto3|crt up|down|up-dir|down-dir PATH BUCKET KEY ENDPOINT

boto3: its default transfer manager (upload_file / download_file; for a directory,
       s3transfer's TransferManager with every file submitted at once, as awscli does).
crt:   s3transfer's CRT transfer manager built by hand over plain HTTP (boto3's
       preferred_transfer_client="crt" forces TLS and cannot reach a local HTTP server).
up-dir/down-dir move every file under PATH to/from keys KEY + relative path.
"""
import os
import sys

import boto3
from botocore.config import Config

tool, direction, path, bucket, key, endpoint = sys.argv[1:7]
session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="benchsecret", region_name="us-east-1")
kwargs = {"endpoint_url": endpoint, "config": Config(s3={"addressing_style": "path"})}
s3 = session.client("s3", **kwargs)


def pairs():
    """(local path, key) of every file of the directory transfer."""
    if direction == "up-dir":
        for root, _, files in os.walk(path):
            for f in files:
                p = os.path.join(root, f)
                yield p, key + os.path.relpath(p, path)
    else:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for o in page.get("Contents", []):
                p = os.path.join(path, o["Key"][len(key):])
                os.makedirs(os.path.dirname(p), exist_ok=True)
                yield p, o["Key"]


def run(manager):
    if direction == "up":
        futures = [manager.upload(path, bucket, key)]
    elif direction == "down":
        futures = [manager.download(bucket, key, path)]
    elif direction == "up-dir":
        futures = [manager.upload(p, bucket, k) for p, k in pairs()]
    else:
        futures = [manager.download(bucket, k, p) for p, k in pairs()]
    for f in futures:
        f.result()


if tool == "boto3":
    if direction == "up":
        s3.upload_file(path, bucket, key)
    elif direction == "down":
        s3.download_file(bucket, key, path)
    else:
        from s3transfer.manager import TransferManager

        with TransferManager(s3) as manager:
            run(manager)
elif tool == "crt":
    import awscrt.auth
    from s3transfer.crt import BotocoreCRTRequestSerializer, CRTTransferManager, create_s3_crt_client

    creds = awscrt.auth.AwsCredentialsProvider.new_static("bench", "benchsecret")
    client = create_s3_crt_client("us-east-1", crt_credentials_provider=creds, use_ssl=False)
    serializer = BotocoreCRTRequestSerializer(session._session, client_kwargs=kwargs)
    with CRTTransferManager(client, serializer) as manager:
        run(manager)
else:
    sys.exit(f"unknown tool {tool}")
