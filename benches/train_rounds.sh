#!/usr/bin/env bash
# Training throughput, sculpt against PyTorch, on CPU: for each model (lenet-300-100,
# lenet-5) runs ROUNDS rounds, each one epoch of sculpt's `train` and then one epoch of
# benches/torch_train_peer.py, and prints the samples/s of each round, the median of each
# side and the ratio sculpt/pytorch of the medians. Run it on a quiet machine, from anywhere.
#
#   ROUNDS   rounds per model (default 3)
#   THREADS  threads for both (default 2): RAYON_NUM_THREADS for sculpt (candle and its
#            gemm read it), torch.set_num_threads for PyTorch
#   MODELS   models to run (default "lenet-300-100 lenet-5")
#   SAMPLES  training samples PyTorch times (default 60000; sculpt's epoch is its own
#            training split, 54000 of MNIST's 60000)
#   SCULPT   the sculpt binary (default: the release build in CARGO_TARGET_DIR, or
#            ~/.cache/sculpt-target as the justfile sets it)
#   PYTHON   Python with torch (default: benches/.venv-torch/bin/python)
#   MNIST    folder of MNIST IDX files (default: ../shared/data/mnist beside the repo)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
MODELS=${MODELS:-"lenet-300-100 lenet-5"}
SAMPLES=${SAMPLES:-60000}
SCULPT=${SCULPT:-"${CARGO_TARGET_DIR:-$HOME/.cache/sculpt-target}/release/sculpt"}
PYTHON=${PYTHON:-"$here/.venv-torch/bin/python"}
MNIST=${MNIST:-"$(cd "$repo/.." && pwd)/shared/data/mnist"}

[ -x "$SCULPT" ] || { echo "no sculpt binary at $SCULPT (build it with cargo build --release)" >&2; exit 1; }
[ -x "$PYTHON" ] || { echo "no Python at $PYTHON (see benches/README-torch.md)" >&2; exit 1; }
[ -d "$MNIST" ] || { echo "no MNIST folder at $MNIST" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores online)"
echo "torch: $("$PYTHON" -c 'import torch; print(torch.__version__)')"
echo "sculpt: $SCULPT"
echo "rounds $ROUNDS, threads $THREADS, batch 128, AdamW lr 1e-3 wd 1e-4, 1 epoch"
echo

# Reads one key of a JSON object from a file.
json_key() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

summary=()
for model in $MODELS; do
  echo "== $model"
  printf '%-6s %16s %16s\n' round sculpt_sps pytorch_sps
  s_all=() p_all=()
  for r in $(seq 1 "$ROUNDS"); do
    out="$work/$model-$r"
    if ! RAYON_NUM_THREADS="$THREADS" "$SCULPT" train --model "$model" --data "mnist:$MNIST" \
        --out "$out" --epochs 1 --batch-size 128 --learning-rate 0.001 --weight-decay 1e-4 \
        --optimizer adamw --schedule constant --seed 1 >"$work/sculpt.log" 2>&1; then
      cat "$work/sculpt.log" >&2
      exit 1
    fi
    s=$(json_key "$out/metrics.json" samples_per_second)
    "$PYTHON" "$here/torch_train_peer.py" --model "$model" --threads "$THREADS" \
      --samples "$SAMPLES" --batch 128 --mnist "$MNIST" >"$work/torch.json"
    p=$(json_key "$work/torch.json" samples_per_second)
    printf '%-6s %16.0f %16.0f\n' "$r" "$s" "$p"
    s_all+=("$s") p_all+=("$p")
  done
  line=$("$PYTHON" - "$model" "${s_all[*]}" "${p_all[*]}" <<'EOF'
import statistics, sys
model, s, p = sys.argv[1], [float(v) for v in sys.argv[2].split()], [float(v) for v in sys.argv[3].split()]
ms, mp = statistics.median(s), statistics.median(p)
print(f"{model:<14} {ms:14.0f} {mp:14.0f} {ms / mp:14.3f}")
EOF
)
  summary+=("$line")
  echo
done

echo "== medians (samples/s)"
printf '%-14s %14s %14s %14s\n' model sculpt pytorch sculpt/pytorch
printf '%s\n' "${summary[@]}"
