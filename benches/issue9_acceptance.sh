#!/usr/bin/env bash
# Reproduces the acceptance figures of issue 9 on a quiet machine, one job at a time:
#   1. trials per minute with 1 worker (2 threads) and 2 workers (1 thread each), for the
#      quickstart and for mnist-lenet300;
#   2. successive halving against full fidelity on mnist-lenet300 (9 fine-tuning epochs),
#      for the same wall-clock budget: hypervolume and the held-out (test) accuracy of the
#      best configuration under a size budget of 1/40 of the teacher;
#   3. mnist-lenet5 unattended for 30 minutes (after its teacher): trials, failures, front.
# Run from the repository root: benches/issue9_acceptance.sh. Output: reports/issue9/.
# STEPS="1 2 3" selects steps; ASHA_MINUTES (default 8) and LENET5_MINUTES (default 30).
set -euo pipefail
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sculpt-target}
S=$CARGO_TARGET_DIR/release/sculpt
[ -x "$S" ] || cargo build --release
OUT=reports/issue9
mkdir -p $OUT
STEPS=${STEPS:-"1 2 3"}
ASHA_MINUTES=${ASHA_MINUTES:-8}
LENET5_MINUTES=${LENET5_MINUTES:-30}
MNIST=$(cd .. && pwd)/shared/data/mnist
echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores)"

# Trials per minute of the last run in DIR, from runs.jsonl (start to end of the run, the
# teacher already cached) and the trials it added.
rate() {
  python3 - "$1" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1] + "/runs.jsonl")]
end = [r for r in runs if r["event"] == "end"][-1]
n = end["trials_after"] - end["trials_before"]
minutes = (end["ended"] - end["started"]) / 60
print(f"{n} trials in {minutes:.2f} min = {n / minutes:.2f} trials/min")
EOF
}

# A fresh campaign folder holding a copy of a trained teacher.
fresh() { rm -rf "$1"; mkdir -p "$1"; cp -r "$2" "$1/teacher"; }

if [[ " $STEPS " == *" 1 "* ]]; then
  echo "== 1. trials per minute, 1 worker x 2 threads against 2 workers x 1 thread"
  $S run experiments/quickstart.toml --out $OUT/q-teacher --trials 1 > /dev/null
  $S run experiments/mnist-lenet300.toml --out $OUT/l300-teacher --trials 1 > /dev/null
  for round in 1 2; do
    for w in 1 2; do
      fresh $OUT/q-w$w $OUT/q-teacher/teacher
      $S run experiments/quickstart.toml --out $OUT/q-w$w --workers $w > /dev/null
      echo "quickstart round $round, $w worker(s): $(rate $OUT/q-w$w)"
    done
  done
  for w in 1 2; do
    fresh $OUT/l300-w$w $OUT/l300-teacher/teacher
    $S run experiments/mnist-lenet300.toml --out $OUT/l300-w$w --workers $w --trials 20 > /dev/null
    echo "mnist-lenet300, $w worker(s): $(rate $OUT/l300-w$w)"
  done
fi

if [[ " $STEPS " == *" 2 "* ]]; then
  echo "== 2. successive halving against full fidelity, ${ASHA_MINUTES} min each, 9 epochs"
  [ -d $OUT/l300-teacher/teacher ] || $S run experiments/mnist-lenet300.toml --out $OUT/l300-teacher --trials 1 > /dev/null
  for mode in full asha; do
    f=$OUT/mnist-lenet300-$mode.toml
    sed -e 's/^name = "mnist-lenet300"/name = "mnist-lenet300-'$mode'"/' \
        -e "s#^source = .*#source = \"mnist:$MNIST\"#" \
        -e '/^\[finetune\]/,/^\[/ s/^epochs = 3/epochs = 9/' \
        -e 's/^trials = 30/trials = 10000/' experiments/mnist-lenet300.toml > $f
    if [ $mode = asha ]; then printf '\n[halving]\nmin_epochs = 1\nreduction_factor = 3\n' >> $f; fi
    fresh $OUT/l300-$mode $OUT/l300-teacher/teacher
    $S run $f --out $OUT/l300-$mode --time-budget ${ASHA_MINUTES}m > $OUT/l300-$mode.txt
    python3 - $OUT/l300-$mode <<'EOF' | tee $OUT/l300-$mode-best.txt
import json, sys
d = sys.argv[1]
trials = [json.loads(l) for l in open(d + "/trials.jsonl")]
teacher = json.load(open(d + "/teacher.json"))
budget = teacher["size_bytes"] / 40
done = [t for t in trials if t["state"] == "complete"]
# Hypervolume of the front of (error, size / teacher size), both minimised, against (1, 1):
# sweeping by error, each front point adds (next error - its error) * (1 - its size).
front = []
for err, size in sorted((1 - t["accuracy"], t["size_bytes"] / teacher["size_bytes"]) for t in done):
    if size < 1 and (not front or size < front[-1][1]):
        front.append((err, size))
hv = sum(((front[i + 1][0] if i + 1 < len(front) else 1.0) - e) * (1 - s) for i, (e, s) in enumerate(front))
under = [t for t in done if t["size_bytes"] <= budget]
best = max(under, key=lambda t: t["accuracy"]) if under else None
states = {}
for t in trials:
    states[t["state"]] = states.get(t["state"], 0) + 1
print(json.dumps({"dir": d, "trials": len(trials), "states": states, "hypervolume": round(hv, 5),
                  "size_budget": budget,
                  "best": best and {"trial": best["trial_id"], "val_accuracy": best["accuracy"],
                                    "size_bytes": best["size_bytes"]}}))
EOF
    best=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["best"]; print(b["trial"] if b else "")' $OUT/l300-$mode-best.txt)
    if [ -n "$best" ]; then
      $S plan $f --trial $best --dir $OUT/l300-$mode --out $OUT/l300-$mode-plan.toml
      $S compress --model $OUT/l300-$mode/teacher --data mnist:$MNIST --plan $OUT/l300-$mode-plan.toml \
          --out $OUT/l300-$mode-best --seed 7 --json > $OUT/l300-$mode-best-metrics.json
      python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print("held-out (test) accuracy of the rebuilt best:", m["accuracy"], "size", m.get("size_bytes"))' $OUT/l300-$mode-best-metrics.json
    fi
  done
fi

if [[ " $STEPS " == *" 3 "* ]]; then
  echo "== 3. mnist-lenet5, ${LENET5_MINUTES} minutes of search after its teacher"
  rm -rf $OUT/l5
  $S run experiments/mnist-lenet5.toml --out $OUT/l5 --trials 1 > $OUT/l5-teacher.txt
  start=$(date +%s)
  $S run experiments/mnist-lenet5.toml --out $OUT/l5 --trials 10000 --time-budget ${LENET5_MINUTES}m ${L5_WORKERS:+--workers $L5_WORKERS} > $OUT/l5.txt
  echo "wall: $(( $(date +%s) - start )) s"
  $S status $OUT/l5 | head -30
fi
