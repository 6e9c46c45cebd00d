#!/usr/bin/env python3
"""The competitors of `tap`'s transfers, for crates/tap-cli/benches/transfer.rs.

    s3_clients.py boto3|crt up|down FILE BUCKET KEY ENDPOINT

boto3: its default transfer manager (upload_file / download_file).
crt:   s3transfer's CRT transfer manager built by hand over plain HTTP (boto3's
       preferred_transfer_client="crt" forces TLS and cannot reach a local HTTP server).
"""
import sys

import boto3
from botocore.config import Config

tool, direction, path, bucket, key, endpoint = sys.argv[1:7]
session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="benchsecret", region_name="us-east-1")
kwargs = {"endpoint_url": endpoint, "config": Config(s3={"addressing_style": "path"})}

if tool == "boto3":
    s3 = session.client("s3", **kwargs)
    if direction == "up":
        s3.upload_file(path, bucket, key)
    else:
        s3.download_file(bucket, key, path)
elif tool == "crt":
    import awscrt.auth
    from s3transfer.crt import BotocoreCRTRequestSerializer, CRTTransferManager, create_s3_crt_client

    creds = awscrt.auth.AwsCredentialsProvider.new_static("bench", "benchsecret")
    client = create_s3_crt_client("us-east-1", crt_credentials_provider=creds, use_ssl=False)
    serializer = BotocoreCRTRequestSerializer(session._session, client_kwargs=kwargs)
    with CRTTransferManager(client, serializer) as manager:
        if direction == "up":
            future = manager.upload(path, bucket, key)
        else:
            future = manager.download(bucket, key, path)
        future.result()
else:
    sys.exit(f"unknown tool {tool}")
