#!/usr/bin/env bash
# Reproduces the acceptance figures of issue 10:
#   1. the sample report of the quickstart (reports/sample/, committed) and its screenshot
#      in headless Chromium, with no console errors;
#   2. on the mnist-lenet300 campaign of issue 9 (reports/issue9/l300-full; run
#      `STEPS=2 benches/issue9_acceptance.sh` first if it is missing): the report with the
#      Pareto configurations rebuilt and scored on the test split (the validation-against-
#      test table), its screenshot, then `export` of trial 12 (40.9x) and `eval` of the
#      exported model on both splits, three times for the latency.
# Run from the repository root. Output: reports/sample/ and reports/issue10/.
set -euo pipefail
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sculpt-target}
S=$CARGO_TARGET_DIR/release/sculpt
[ -x "$S" ] || cargo build --release
OUT=reports/issue10
mkdir -p $OUT
STEPS=${STEPS:-"1 2"}
MNIST=$(cd .. && pwd)/shared/data/mnist
echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores)"

if [[ " $STEPS " == *" 1 "* ]]; then
  echo "== 1. the quickstart's sample report"
  $S run experiments/quickstart.toml > $OUT/quickstart.txt
  rm -rf reports/sample
  $S report reports/quickstart --out reports/sample | tail -9
  scripts/screenshot-report.sh reports/sample 1100 4700
fi

if [[ " $STEPS " == *" 2 "* ]]; then
  echo "== 2. mnist-lenet300: held-out truth, export and eval"
  DIR=reports/issue9/l300-full
  CAMPAIGN=reports/issue9/mnist-lenet300-full.toml
  [ -d $DIR ] || { echo "missing $DIR: run STEPS=2 benches/issue9_acceptance.sh first" >&2; exit 1; }
  time $S report $DIR --campaign $CAMPAIGN --out $OUT/l300-full | tail -10
  scripts/screenshot-report.sh $OUT/l300-full 1100 6000
  python3 - $DIR <<'PY'
import json, sys
d = sys.argv[1]
h = json.load(open(d + "/heldout.json"))
trials = {t["trial_id"]: t for t in map(json.loads, open(d + "/trials.jsonl"))}
teacher = json.load(open(d + "/teacher.json"))
print(f"teacher: validation {teacher['accuracy']*100:.2f}%, test {h['teacher_test_accuracy']*100:.2f}%")
print("| trial | size (B) | smaller | validation (stored) | validation (rebuilt) | test | test - stored |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for k, v in sorted(h["trials"].items(), key=lambda kv: trials[int(kv[0])]["size_bytes"]):
    t = trials[int(k)]
    print(f"| {k} | {t['size_bytes']} | {teacher['size_bytes']/t['size_bytes']:.1f}x | "
          f"{v['stored_val_accuracy']*100:.2f}% | {v['val_accuracy']*100:.2f}% | "
          f"{v['test_accuracy']*100:.2f}% | {(v['test_accuracy']-v['stored_val_accuracy'])*100:+.2f} |")
PY
  rm -rf $OUT/l300-trial12
  $S export $DIR --trial 12 --campaign $CAMPAIGN --out $OUT/l300-trial12
  for i in 1 2 3; do
    $S eval --model $OUT/l300-trial12 --data mnist:$MNIST --split val --json > $OUT/eval12-val-$i.json
  done
  $S eval --model $OUT/l300-trial12 --data mnist:$MNIST --split test --json > $OUT/eval12-test.json
  python3 - $OUT <<'PY'
import json, sys
o = sys.argv[1]
m = json.load(open(o + "/l300-trial12/metrics.json"))
print(f"export: validation {m['val_accuracy']*100:.2f}% (stored {m['stored_accuracy']*100:.2f}%), "
      f"test {m['test_accuracy']*100:.2f}%, size {m['size_bytes']} B (stored {m['stored_size_bytes']} B), "
      f"file {m['file_bytes']} B, latency {m['latency_ms']*1000:.2f} us")
for f in ["eval12-val-1", "eval12-val-2", "eval12-val-3", "eval12-test"]:
    e = json.load(open(f"{o}/{f}.json"))
    print(f"eval {e['split']}: accuracy {e['accuracy']*100:.2f}%, size {e['size_bytes']} B, "
          f"latency {e['latency_ms']*1000:.2f} us median, {e['latency_p90_ms']*1000:.2f} us p90")
PY
fi
