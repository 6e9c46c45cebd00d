"""The training process of the supervisor benchmark (scripts/bench-supervisor.sh).

Writes CHECKPOINTS checkpoints of SIZE bytes (one file, every byte changed each time, as
real weights are), marks each one, and between them prints a line every millisecond,
timing every write+flush of its stdout: the worst one during a commit is the stall tap
causes. A commit ends when the store's LATEST changes (a file: the local store's, or
s3s-fs's), and is noted in MARKS. On SIGUSR1 it notes the arrival time.
Results go to RESULT as JSON when the last commit is done and the notice has arrived.
"""

import json
import os
import signal
import sys
import time

SIZE, CHECKPOINTS, LATEST, RESULT, MARKS = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
CHUNK = 8 << 20
DIR, METRICS = os.environ["TAP_CHECKPOINT_DIR"], os.environ["TAP_METRICS_FILE"]
LIMIT_S = 600  # every wait below is bounded

got_notice = []
signal.signal(signal.SIGUSR1, lambda *_: got_notice.append(time.time()))


def latest():
    try:
        with open(LATEST, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_checkpoint(k):
    block = bytearray(os.urandom(CHUNK))
    tmp = os.path.join(DIR, ".model.bin.tmp")
    with open(tmp, "wb") as f:
        left, i = SIZE, 0
        while left > 0:
            block[0:16] = k.to_bytes(8, "little") + i.to_bytes(8, "little")
            n = min(left, CHUNK)
            f.write(block[:n])
            left, i = left - n, i + 1
    os.replace(tmp, os.path.join(DIR, "model.bin"))


def print_until(done, limit_s):
    """Prints a line per millisecond until done() (checked every 20 ms); the worst stall."""
    worst, start, last_check, n = 0.0, time.monotonic(), 0.0, 0
    out = sys.stdout
    while time.monotonic() - start < limit_s:
        t0 = time.monotonic()
        out.write(f"step line {n} ........................................................\n")
        out.flush()
        worst = max(worst, time.monotonic() - t0)
        n += 1
        if t0 - last_check > 0.02:
            last_check = t0
            if done():
                return worst, True
        time.sleep(0.001)
    return worst, False


commits, stalls = [], []
for k in range(1, CHECKPOINTS + 1):
    before = latest()
    write_checkpoint(k)
    marked = time.time()
    with open(METRICS, "a") as f:
        f.write(json.dumps({"checkpoint": True, "step": k}) + "\n")
    with open(MARKS, "a") as f:
        f.write(f"{k} {marked}\n")
    worst, ok = print_until(lambda: latest() != before, LIMIT_S)
    commits.append(time.time() - marked if ok else None)
    with open(MARKS, "a") as f:
        f.write(f"commit {k} {commits[-1]}\n")
    stalls.append(worst)
# The notice comes during the last commit; wait (bounded) if it has not yet.
print_until(lambda: bool(got_notice), 120)
with open(RESULT, "w") as f:
    json.dump({"commit_s": commits, "stall_s": stalls, "notice_received": got_notice[0] if got_notice else None}, f)
