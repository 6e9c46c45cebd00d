#!/usr/bin/env bash
# tap's main job on its embedded default, no AWS account needed: a sweep of two tracked
# trainings, one of which a (simulated) spot interruption notice stops mid-training; it then
# resumes from its own checkpoint, as a second attempt of the same run; it ends with the
# goodput of both trainings (and its plot).
# State goes to $TAP_HOME (default ./.tap-demo, recreated each time).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export TAP_HOME="${TAP_HOME:-$repo/.tap-demo}"
rm -rf "$TAP_HOME"
echo "== building tap"
# Without the fleet feature (EC2, SSM Run Command): the local store needs neither, and tap
# builds in half the time.
cargo build --quiet --release -p tap-cli --bin tap --no-default-features
tap="$repo/target/release/tap"

echo "== hyperparameters (versioned; on a stack they live in SSM /ml/hparams)"
"$tap" params set learning_rate 0.05 >/dev/null
"$tap" params set epochs 4 >/dev/null
"$tap" params set steps_per_epoch 50 >/dev/null
"$tap" params set checkpoint_every 25 >/dev/null
"$tap" params list

echo; echo "== a sweep: two trainings of one experiment at once, each with its own learning rate"
export TAP_EXAMPLE_STEP_SECONDS=0.03
"$tap" run --experiment demo --name base -- python3 examples/train.py &
pid=$!
"$tap" run --experiment demo --name hot --param learning_rate=0.2 -- python3 examples/train.py >/dev/null 2>&1 &
hot=$!
for _ in $(seq 1 300); do # wait (at most 30 s) until "base" has trained a while
  points=$("$tap" runs show base -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["run"]["metric_points"])' 2>/dev/null || echo 0)
  [[ "$points" -ge 240 ]] && break
  sleep 0.1
done
echo; echo "== spot interruption notice for \"base\" (what tap-agent relays from EC2): SIGUSR1 to its tap run"
kill -USR1 "$pid"
status=0; wait "$pid" || status=$?
echo "tap run exited $status (75 = interrupted, resumable)"
wait "$hot"
echo "\"hot\" finished: it holds the experiment's newest checkpoint, which base must never take"

echo; echo "== a second node resumes \"base\": its own checkpoint, its own hyperparameters, a new attempt"
"$tap" run --experiment demo --resume base -- python3 examples/train.py

echo; echo "== tap runs list: one row per training"
"$tap" runs list
echo; echo "== tap runs show base: both attempts, one metric series"
"$tap" runs show base
echo; echo "== tap runs compare base hot"
"$tap" runs compare base hot
echo; echo "== tap runs plot: one curve per run"
"$tap" runs plot base hot --metric loss --log-y --out "$TAP_HOME/loss.png"
echo; echo "== tap checkpoints list base"
"$tap" checkpoints list base
echo; echo "== tap goodput -e demo: where each training's time went, and the checkpoint interval it implies"
"$tap" goodput -e demo --plot "$TAP_HOME/goodput.png" --size 1200x700
"$tap" goodput base
echo; echo "State is in $TAP_HOME; try: TAP_HOME=$TAP_HOME $tap runs list --output json"
echo "or browse it: TAP_HOME=$TAP_HOME $tap ui --open"
