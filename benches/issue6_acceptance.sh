#!/usr/bin/env bash
# Reproduces the compression-operator figures of issue 6 on MNIST: trains the teachers
# (once), applies the plans in experiments/plans with `sculpt compress`, measures batch-1
# latency with `sculpt eval`, and runs the distillation ablation. Each result is a
# metrics.json under $OUT; the script prints one line per result.
#
#   benches/issue6_acceptance.sh [MNIST_DIR] [OUT]
#
# Takes about an hour on 2 cores. Not part of the test command.
set -euo pipefail
cd "$(dirname "$0")/.."
MNIST="${1:-../shared/data/mnist}"
OUT="${2:-reports/issue6}"
DATA="mnist:$MNIST"
SEED=7
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sculpt-target}"
cargo build --release --quiet
SCULPT="$CARGO_TARGET_DIR/release/sculpt"
mkdir -p "$OUT"

teacher() { # name model epochs learning-rate
    if [ ! -f "$OUT/teachers/$1/model.toml" ]; then
        "$SCULPT" train --model "$2" --data "$DATA" --out "$OUT/teachers/$1" \
            --epochs "$3" --batch-size 128 --learning-rate "$4" --seed $SEED
    fi
}
teacher lenet300 lenet-300-100 30 0.001
teacher lenet5 lenet-5 15 0.001
teacher resnet8 resnet-8 1 0.002

compress() { # teacher plan-file name
    "$SCULPT" compress --model "$OUT/teachers/$1" --data "$DATA" --seed $SEED \
        --plan "$2" --out "$OUT/$3" --json > "$OUT/$3.json"
    python3 - "$OUT/$3.json" "$3" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<34} test accuracy {m['accuracy']*100:6.2f}% (teacher {m['teacher_accuracy']*100:.2f}%, "
      f"{(m['accuracy']-m['teacher_accuracy'])*100:+.2f} points), error {100-m['accuracy']*100:.2f}%, "
      f"{m['size_bytes']} bytes, {m['compression_ratio']:.1f}x smaller, {m['nonzeros']} nonzeros")
PY
}
P=experiments/plans
compress lenet300 $P/ptq-8bit.toml l300-ptq8
compress lenet300 $P/qat-4bit.toml l300-qat4
compress lenet300 $P/magnitude-90.toml l300-magnitude90
compress lenet300 $P/magnitude-90-agp.toml l300-magnitude90-agp
compress lenet300 $P/deep-compression-lenet-300-100.toml l300-deep-compression
compress lenet5 $P/deep-compression-lenet-5.toml l5-deep-compression
compress lenet5 $P/lenet5-half-channels.toml l5-half-channels

# ResNet-8: half the channels of every residual group.
cat > "$OUT/resnet8-half.toml" <<'TOML'
[distill]
temperature = 4.0
alpha = 0.7
[finetune]
epochs = 1
batch_size = 128
learning_rate = 0.001
[layers."*"]
prune = 0.5
TOML
compress resnet8 "$OUT/resnet8-half.toml" resnet8-half-channels

# Measured batch-1 latency of LeNet-5 and its half-channel version, alternating.
for round in 1 2 3; do
    for m in "$OUT/teachers/lenet5" "$OUT/l5-half-channels"; do
        "$SCULPT" eval --model "$m" --data "$DATA" --seed $SEED --batch-size 1 --json \
            | python3 -c "import json,sys; m=json.load(sys.stdin); print(f'round $round {sys.argv[1]:<40} batch-1 latency {m[\"latency_ms_measured\"]:.4f} ms measured')" "$m"
    done
done

# The campaign's most accurate configuration 40x smaller or more, rebuilt with AGP and a
# longer fine-tuning (run `sculpt run experiments/mnist-lenet300.toml` first, and pick
# the trial from reports/mnist-lenet300/trials.jsonl):
#   sculpt plan experiments/mnist-lenet300.toml --trial N --out t.toml, then set
#   schedule = "agp" and [finetune] epochs = 16 in t.toml, and `compress lenet300 t.toml`.

# Ablation: distillation against plain fine-tuning (alpha = 0), equal steps, three plans.
for plan in qat-3bit magnitude-95 prune-70; do
    case $plan in
        qat-3bit) body='[layers."*"]
bits = 3' ;;
        magnitude-95) body='[layers."*"]
sparsity = 0.95' ;;
        prune-70) body='[layers."fc*"]
prune = 0.7' ;;
    esac
    for alpha in 0.0 0.7; do
        printf '[distill]\ntemperature = 4.0\nalpha = %s\n[finetune]\nepochs = 3\nbatch_size = 128\nlearning_rate = 0.001\n%s\n' \
            "$alpha" "$body" > "$OUT/ablation-$plan-$alpha.toml"
        compress lenet300 "$OUT/ablation-$plan-$alpha.toml" "ablation-$plan-alpha$alpha"
    done
done
