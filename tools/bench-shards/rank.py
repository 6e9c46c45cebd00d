"""One rank of the sharded-checkpoint benchmark: says it is ready, waits for the notice
(SIGUSR1 from tap run), writes its shard (BENCH_SHARD_BYTES of its own bytes) into
TAP_CHECKPOINT_DIR, announces it as step 1 and exits."""
import json
import os
import signal
import sys
import time

noticed = False


def on_notice(signum, frame):
    global noticed
    noticed = True


signal.signal(signal.SIGUSR1, on_notice)
size = int(os.environ["BENCH_SHARD_BYTES"])
open(os.environ["BENCH_READY"], "w").close()
until = time.monotonic() + 300
while not noticed:
    if time.monotonic() > until:
        sys.exit("bench rank: no notice in 300 s")
    time.sleep(0.005)
chunk = os.urandom(1 << 20)
path = os.path.join(os.environ["TAP_CHECKPOINT_DIR"], "shard.bin")
with open(path, "wb") as f:
    left = size
    while left > 0:
        n = min(left, len(chunk))
        f.write(chunk[:n])
        left -= n
with open(os.environ["TAP_METRICS_FILE"], "a") as m:
    m.write(json.dumps({"checkpoint": True, "step": 1}) + "\n")
