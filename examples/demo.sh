#!/usr/bin/env bash
# tap's main job on its embedded default, no AWS account needed: a tracked training run that a
# (simulated) spot interruption notice stops mid-training, then resumes from its checkpoint.
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

echo; echo "== tap run: training starts"
export TAP_EXAMPLE_STEP_SECONDS=0.03
"$tap" run --experiment demo -- python3 examples/train.py &
pid=$!
for _ in $(seq 1 300); do # wait (at most 30 s) until it has trained a while
  points=$("$tap" runs list -o json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[0]["metric_points"] if r else 0)')
  [[ "$points" -ge 240 ]] && break
  sleep 0.1
done
echo; echo "== spot interruption notice (what tap-agent relays from EC2): SIGUSR1 to tap run"
kill -USR1 "$pid"
status=0; wait "$pid" || status=$?
echo "tap run exited $status (75 = interrupted, resumable)"

echo; echo "== a second node resumes the experiment from its latest checkpoint"
"$tap" run --experiment demo --resume -- python3 examples/train.py

echo; echo "== tap runs list"
"$tap" runs list
second=$("$tap" runs list -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["run_id"])')
first=$("$tap" runs list -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[1]["run_id"])')
echo; echo "== tap runs show $second"
"$tap" runs show "$second"
echo; echo "== tap runs compare"
"$tap" runs compare "$first" "$second"
echo; echo "== tap runs plot: both halves of the run in one picture"
"$tap" runs plot "$first" "$second" --metric loss --log-y --out "$TAP_HOME/loss.png"
echo; echo "== tap checkpoints latest -e demo"
"$tap" checkpoints latest -e demo
echo; echo "State is in $TAP_HOME; try: TAP_HOME=$TAP_HOME $tap runs list --output json"
