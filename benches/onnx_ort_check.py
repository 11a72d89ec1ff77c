"""Runs a model that `sculpt export --format onnx` wrote in onnxruntime: accuracy on MNIST's
official test set (through the preprocessing the model declares in model.toml) and
batch-1 latency on 1 thread, next to `sculpt eval` on the same model directory.

    benches/.venv-torch/bin/pip install onnxruntime    # numpy comes with torch
    benches/.venv-torch/bin/python benches/onnx_ort_check.py OUT ../shared/data/mnist [sculpt]

OUT is the export folder (model.onnx, model.toml, model.safetensors). The optional third
argument is the sculpt binary (default ~/.cache/sculpt-target/release/sculpt). Prints one
JSON object.
"""
import gzip, json, os, struct, subprocess, sys, time, tomllib

import numpy as np
import onnxruntime as ort

out, mnist = sys.argv[1], sys.argv[2]
sculpt = sys.argv[3] if len(sys.argv) > 3 else os.path.expanduser("~/.cache/sculpt-target/release/sculpt")


def idx(name):
    path = os.path.join(mnist, name)
    opener = open if os.path.exists(path) else gzip.open
    path = path if os.path.exists(path) else path + ".gz"
    with opener(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        dims = [struct.unpack(">I", f.read(4))[0] for _ in range(magic & 0xFF)]
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


spec = tomllib.load(open(os.path.join(out, "model.toml"), "rb"))
pre = spec.get("preprocessing")
if pre is None:
    sys.exit("model.toml declares no [preprocessing]; this script needs it to feed raw images")
images = idx("t10k-images-idx3-ubyte").astype(np.float32)
labels = idx("t10k-labels-idx1-ubyte").astype(np.int64)
shape = [len(images)] + spec["input_shape"]
x = images.reshape(shape) * pre.get("scale", 1.0)
mean = np.array(pre.get("mean", [0.0]), dtype=np.float32)
std = np.array(pre.get("std", [1.0]), dtype=np.float32)
if len(spec["input_shape"]) == 3 and len(mean) == spec["input_shape"][0] and len(mean) > 1:
    mean, std = mean[:, None, None], std[:, None, None]
x = ((x - mean) / std).astype(np.float32)

options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.path.join(out, "model.onnx"), options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
correct = 0
for i in range(0, len(x), 1000):
    logits = session.run(None, {name: x[i : i + 1000]})[0]
    correct += int((logits.argmax(1) == labels[i : i + 1000]).sum())
one = x[:1]
for _ in range(200):
    session.run(None, {name: one})
times = []
for _ in range(2000):
    t = time.perf_counter()
    session.run(None, {name: one})
    times.append(time.perf_counter() - t)
times.sort()
ev = json.loads(subprocess.run(
    [sculpt, "eval", "--model", out, "--data", "mnist:" + mnist, "--split", "test", "--json"],
    check=True, capture_output=True, text=True).stdout)
print(json.dumps({
    "model": out,
    "onnxruntime": ort.__version__,
    "ort_test_accuracy": correct / len(x),
    "sculpt_test_accuracy": ev["accuracy"],
    "ort_latency_ms_median": times[len(times) // 2] * 1000,
    "ort_latency_ms_p90": times[int(len(times) * 0.9)] * 1000,
    "sculpt_latency_ms_median": ev["latency_ms"],
    "sculpt_latency_ms_p90": ev["latency_p90_ms"],
    "onnx_bytes": os.path.getsize(os.path.join(out, "model.onnx")),
    "sculpt_size_bytes": ev["size_bytes"],
}, indent=1))
