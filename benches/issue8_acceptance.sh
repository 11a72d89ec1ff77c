#!/usr/bin/env bash
# Reproduces the acceptance figures of issue 8 (the GP and auto strategies, and the
# benchmark that measures how fast strategies find the front). Run from the repository
# root on a quiet machine: benches/issue8_acceptance.sh. Results go to reports/issue8/.
# The Optuna side needs the venv of benches/README-optuna.md (skipped when it is absent).
set -euo pipefail
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sculpt-target}
cargo build --release
S=$CARGO_TARGET_DIR/release/sculpt
OUT=reports/issue8
mkdir -p $OUT

# The digits teacher of the quickstart (trained on first use), and its tables: 1024
# configurations (prune 0-0.75 on fc1 and fc2, bits 2/4/8/32 on fc1-fc3), and a larger
# one of 34,300 (ten prune ratios, seven bit widths). Latency: the roofline of the EPYC
# profile, or LUT=path for a lookup table from `sculpt profile`.
[ -f reports/quickstart/teacher/model.toml ] || $S run experiments/quickstart.toml > /dev/null
LUTARG=${LUT:+--lut $LUT}
$S bench-table --model reports/quickstart/teacher --data digits --out $OUT/table.parquet $LUTARG
$S bench-table --model reports/quickstart/teacher --data digits --out $OUT/table-large.parquet \
    --prune 0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9 --bits 2,3,4,5,6,8,32 $LUTARG

# 1. The tabular benchmark: median of 10 seeds at 50, 100 and 200 evaluations.
$S bench-search --table $OUT/table.parquet --strategy random,nsga2,gp,auto --population 16 \
    --seeds 10 --budget 200 --trace $OUT/trace-table.parquet --figure $OUT/hv-table.svg \
    | tee $OUT/bench-table.txt
$S bench-search --table $OUT/table-large.parquet --strategy random,nsga2,gp --population 16 \
    --seeds 10 --budget 200 --figure $OUT/hv-table-large.svg | tee $OUT/bench-table-large.txt

# 2. The synthetic problems at 200 evaluations (the GP on 30 dimensions is the slow part).
for p in zdt1 zdt2 zdt3 dtlz2; do
  $S bench-search --problem $p --strategy random,nsga2 --seeds 10 --budget 200 | tee $OUT/bench-$p.txt
  $S bench-search --problem $p --strategy gp --seeds 3 --budget 200 | tee -a $OUT/bench-$p.txt
done

# 3. NSGA-II on ZDT1 with 30 variables after 25,000 evaluations.
$S bench-search --problem zdt1 --strategy nsga2 --seeds 5 --budget 25000 | tee $OUT/zdt1-25k.txt

# 4. Where auto should hand over: ZDT1 to 800 evaluations, the GP for 50 to 400 trials.
for g in 50 100 200 400; do
  $S bench-search --problem zdt1 --strategy auto --gp-trials $g --seeds 2 --budget 800 --json
done | tee $OUT/switch-zdt1.jsonl
$S bench-search --problem zdt1 --strategy nsga2 --seeds 2 --budget 800 --json | tee -a $OUT/switch-zdt1.jsonl

# 5. The quickstart with auto and with nsga2 on the same seed.
for s in auto nsga2; do
  sed -e "s/^strategy = .*/strategy = \"$s\"/" -e "s/^name = \"quickstart\"/name = \"quickstart-$s\"/" \
      experiments/quickstart.toml > $OUT/qs-$s.toml
  rm -rf $OUT/qs-$s
  $S run $OUT/qs-$s.toml --out $OUT/qs-$s > /dev/null
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def hv2(points, ref):
    pts = sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1])
    best, vol = ref[1], 0.0
    for x, y in pts:
        if y < best:
            vol += (ref[0] - x) * (best - y); best = y
    return vol
for s in ("auto", "nsga2"):
    d = f"{out}/qs-{s}"
    t = json.load(open(f"{d}/teacher.json"))
    rows = [json.loads(l) for l in open(f"{d}/trials.jsonl")]
    hv = [hv2([(1 - r["accuracy"], r["latency_ms"] / t["latency_ms"]) for r in rows[:k]
               if r["state"] == "complete"], (1.0, 1.0)) for k in (40, 80)]
    print(f"quickstart {s}: hypervolume after 40 trials {hv[0]:.4f}, after 80 {hv[1]:.4f}")
PY

# 6. The cost of a GP ask after 500 trials.
cargo bench --bench gp_ask | tee $OUT/gp-ask.txt

# 7. Optuna on the same table (its GP for 3 seeds: about 2 s a trial).
PY=benches/.venv-optuna/bin/python
if [ -x $PY ]; then
  for s in random tpe; do
    $PY benches/optuna_peer.py --problem table --table $OUT/table.parquet --sampler $s --budget 200 --seeds 10
  done | tee $OUT/optuna-table.txt
  for pop in 50 16; do
    $PY benches/optuna_peer.py --problem table --table $OUT/table.parquet --sampler nsga2 --population $pop --budget 200 --seeds 10
  done | tee -a $OUT/optuna-table.txt
  $PY benches/optuna_peer.py --problem table --table $OUT/table.parquet --sampler gp --budget 200 --seeds 3 | tee -a $OUT/optuna-table.txt
fi
