#!/usr/bin/env bash
# Reproduces the acceptance figures of issue 7 (runtime, latency models, screening) on this
# machine. Run from the repository root on a quiet machine (nothing else on the cores):
#   benches/issue7_acceptance.sh
# It needs the MNIST teachers (reports/teachers/{lenet300,lenet5}; see issue6_acceptance.sh)
# and the onnxruntime venv of benches/README-ort.md. Results go to reports/issue7/.
# STEPS="1 2 3 4" selects the steps below (all by default).
set -euo pipefail
STEPS=${STEPS:-"1 2 3 4"}
step() { [[ " $STEPS " == *" $1 "* ]]; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sculpt-target}
cargo build --release
S=$CARGO_TARGET_DIR/release/sculpt
OUT=reports/issue7
MNIST=mnist:../shared/data/mnist
mkdir -p $OUT

# 1. sculpt's runtime against onnxruntime, batch 1, f32 and int8, 1 and 2 threads.
if step 1; then
for m in lenet300 lenet5; do
  [ -d reports/ptq8/$m ] || $S compress --model reports/teachers/$m --data $MNIST \
      --plan experiments/plans/ptq-8bit.toml --out reports/ptq8/$m
done
benches/.venv/bin/python benches/ort_peer.py \
    --model lenet5=reports/teachers/lenet5 --int8-model lenet5=reports/ptq8/lenet5 \
    --model lenet300=reports/teachers/lenet300 --int8-model lenet300=reports/ptq8/lenet300 \
    --sculpt $S --json-out $OUT/ort-peer.json | tee $OUT/ort-peer.md
fi

# 2. Real speed-ups of compression in the runtime.
if step 2; then
cargo bench --bench runtime | tee $OUT/speedups.md
fi

# 3. The lookup tables (batch 1 and 64), the host profile, and the predictors validated on
#    100 random plans of each network at each batch.
if step 3; then
# PROFILE=0 validates the tables already in $OUT instead of profiling them again.
if [ "${PROFILE:-1}" != 0 ]; then
  $S profile --out $OUT/lut-b1.parquet --batch 1 --host-profile $OUT/host.toml
  $S profile --out $OUT/lut-b64.parquet --batch 64 --budget-ms 40
fi
# Each table is validated as profiled (its scales fitted on the zoo's networks), and
# calibrated anew on the model validated, on its 24 calibration plans (other plans than
# the validation's), timed in the same passes as the validation's plans (`--calibrate`;
# the table so calibrated is written to lut-MODEL-bB.parquet).
for m in lenet300 lenet5; do
  for b in 1 64; do
    runs=400; [ $b = 64 ] && runs=20
    for t in zoo $m; do
      calibrate=""; [ $t = zoo ] || calibrate="--calibrate --calibrated-out $OUT/lut-$m-b$b.parquet"
      $S latency validate --model reports/teachers/$m --lut $OUT/lut-b$b.parquet $calibrate --batch $b \
          --plans 100 --runs $runs --passes 7 --figure $OUT/validate-$m-b$b-$t.svg --json > $OUT/validate-$m-b$b-$t.json
      python3 -c "import json,sys; v=json.load(open('$OUT/validate-$m-b$b-$t.json')); a=v['lut_drift_adjusted']; d=v['host_drift']; \
print('$m batch $b, table calibrated on $t: within ±10%% of the measurement brought to the table speed %.0f%% (mape %.1f%%); of the raw measurement %.0f%% (mape %.1f%%); roofline %.0f%% (mape %.1f%%); host at %.2fx (%.2f-%.2f) of the table reference, %.2fx of its Linear one' % \
(100*a['within_10pct'], a['mape'], 100*v['lut']['within_10pct'], v['lut']['mape'], 100*v['roofline']['within_10pct'], v['roofline']['mape'], d['median_ratio'], d['min_ratio'], d['max_ratio'], d['linear_median_ratio']))"
    done
  done
done
fi

# 4. Screening on the quickstart with a tight budget and the lookup table: how many
#    fine-tunes it saved, and whether any screened-out candidate would have met the budget
#    when measured.
if step 4; then
BUDGET=${BUDGET:-0.0008}
sed -e "s|^budget_ms = .*|budget_ms = $BUDGET\nmodel = \"lut\"\nlut = \"../../$OUT/lut-b1.parquet\"|" \
    -e 's|^name = "quickstart"|name = "quickstart-screened"|' \
    experiments/quickstart.toml > $OUT/quickstart-screened.toml
sed -i 's|^profile = "epyc-zen4-1core".*|profile = "epyc-zen4-1core"|' $OUT/quickstart-screened.toml
mkdir -p $OUT/screen
rm -rf $OUT/screen/run
$S run $OUT/quickstart-screened.toml --out $OUT/screen/run | tail -3
python3 - "$OUT" "$S" "$BUDGET" <<'PY'
import json, subprocess, sys
out, s, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])
rows = [json.loads(l) for l in open(f"{out}/screen/run/trials.jsonl")]
screened = [r for r in rows if r["state"] == "infeasible"]
print(f"{len(rows)} trials, {len(screened)} screened out (fine-tunes saved), budget {budget} ms")
met = 0
for r in screened:
    n = r["trial_id"]
    plan = f"{out}/screen/plan-{n}.toml"
    subprocess.run([s, "plan", f"{out}/quickstart-screened.toml", "--trial", str(n), "--dir",
                    f"{out}/screen/run", "--out", plan], check=True, capture_output=True)
    model = f"{out}/screen/model-{n}"
    subprocess.run([s, "compress", "--model", f"{out}/screen/run/teacher", "--data", "digits",
                    "--plan", plan, "--epochs", "0", "--out", model, "--seed", "42"],
                   check=True, capture_output=True)
    m = json.loads(subprocess.run([s, "latency", "measure", "--model", model, "--json",
                                   "--runs", "2000"], check=True, capture_output=True).stdout)
    if m["median_ms"] <= budget:
        met += 1
        print(f"  trial {n}: predicted {r['latency_ms']:.4f} ms, measured {m['median_ms']:.4f} ms: WOULD HAVE MET THE BUDGET")
    else:
        print(f"  trial {n}: predicted {r['latency_ms']:.4f} ms, measured {m['median_ms']:.4f} ms")
print(f"screened-out candidates that measured within the budget: {met} of {len(screened)}")
PY
fi
