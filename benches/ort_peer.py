#!/usr/bin/env python3
"""onnxruntime as a peer for sculpt's inference latency.

Reads sculpt model directories (``model.toml`` + ``model.safetensors``), builds the
equivalent ONNX graph (opset 17, dynamic batch) and an 8-bit version made by
onnxruntime's dynamic quantization, then times onnxruntime and sculpt's own runtime on
the same cells (model x precision x threads), alternating the two peers over several
rounds so that machine noise hits both.

See benches/README-ort.md for the venv and the command lines.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parent.parent
OPSET = 17
# IR version 8 is the one that goes with opset 17; a newer onnx package would otherwise
# stamp its own (newer) IR version, which an older onnxruntime may refuse.
IR_VERSION = 8
PRECISIONS = ("f32", "int8")


class SpecError(Exception):
    """A model directory this script cannot turn into ONNX."""


# --------------------------------------------------------------------------------------
# model.toml + model.safetensors -> ONNX
# --------------------------------------------------------------------------------------

def load_model_dir(d: Path) -> tuple[dict, dict[str, np.ndarray]]:
    toml_path, st_path = d / "model.toml", d / "model.safetensors"
    for p in (toml_path, st_path):
        if not p.is_file():
            raise SpecError(f"{d}: no {p.name}")
    with open(toml_path, "rb") as f:
        spec = tomllib.load(f)
    for key in ("input_shape", "num_classes", "nodes", "output"):
        if key not in spec:
            raise SpecError(f"{toml_path}: no `{key}`")
    tensors = load_file(str(st_path))
    return spec, tensors


def _topo_order(nodes: list[dict]) -> list[dict]:
    by_name = {}
    for n in nodes:
        if n["name"] in by_name or n["name"] == "input":
            raise SpecError(f"node name `{n['name']}` is used twice (or is `input`)")
        by_name[n["name"]] = n
    order, state = [], {}

    def visit(name: str, path: list[str]):
        if name == "input":
            return
        if name not in by_name:
            raise SpecError(f"node `{path[-1]}` reads `{name}`, which is no node")
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            raise SpecError(f"cycle through `{name}`")
        state[name] = "active"
        for i in by_name[name].get("inputs", []):
            visit(i, path + [name])
        state[name] = "done"
        order.append(by_name[name])

    for n in nodes:
        visit(n["name"], [n["name"]])
    return order


def build_onnx(spec: dict, tensors: dict[str, np.ndarray], linear_as_matmul: bool = False
               ) -> onnx.ModelProto:
    """The ONNX graph of a sculpt graph spec.

    Linear is Gemm(transB=1) by default. With ``linear_as_matmul`` it is MatMul with the
    transposed weight plus Add of the bias instead: the same function, in the form that
    onnxruntime's dynamic quantization rewrites (it has no integer Gemm, so a Gemm would
    be left in float).
    """
    input_shape = [int(s) for s in spec["input_shape"]]
    num_classes = int(spec["num_classes"])
    onnx_nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {}

    def param(node: dict, local: str, shape: tuple[int, ...]) -> str:
        key = f"{node['name']}.{local}"
        if key not in tensors:
            raise SpecError(f"node `{node['name']}`: no tensor `{key}` in model.safetensors")
        t = tensors[key]
        if not np.issubdtype(t.dtype, np.floating):
            raise SpecError(f"tensor `{key}` is {t.dtype}, not a float type")
        if tuple(t.shape) != tuple(shape):
            raise SpecError(f"tensor `{key}` has shape {list(t.shape)}, expected {list(shape)}")
        inits[key] = np.ascontiguousarray(t, dtype=np.float32)
        return key

    for node in _topo_order(spec["nodes"]):
        name, op, ins = node["name"], node.get("op"), list(node.get("inputs", []))
        arity = 2 if op == "add" else 1
        if len(ins) != arity:
            raise SpecError(f"node `{name}` ({op}) has {len(ins)} inputs, expected {arity}")
        x = ins[0]
        if op == "linear":
            fi, fo = int(node["in_features"]), int(node["out_features"])
            w = param(node, "weight", (fo, fi))
            b = param(node, "bias", (fo,)) if node.get("bias", True) else None
            if linear_as_matmul:
                wt = f"{w}.T"
                inits[wt] = np.ascontiguousarray(inits.pop(w).T)
                mm = name if b is None else f"{name}.matmul"
                onnx_nodes.append(helper.make_node("MatMul", [x, wt], [mm], name=f"{name}.matmul"))
                if b is not None:
                    onnx_nodes.append(helper.make_node("Add", [mm, b], [name], name=name))
            else:
                onnx_nodes.append(helper.make_node(
                    "Gemm", [x, w] + ([b] if b else []), [name], name=name, transB=1))
        elif op == "conv2d":
            cin, cout = int(node["in_channels"]), int(node["out_channels"])
            k = int(node["kernel_size"])
            s, p = int(node.get("stride", 1)), int(node.get("padding", 0))
            g = int(node.get("groups", 1))
            if g < 1 or cin % g or cout % g:
                raise SpecError(f"node `{name}`: groups {g} does not divide {cin} -> {cout}")
            w = param(node, "weight", (cout, cin // g, k, k))
            b = param(node, "bias", (cout,)) if node.get("bias", True) else None
            onnx_nodes.append(helper.make_node(
                "Conv", [x, w] + ([b] if b else []), [name], name=name,
                kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p],
                dilations=[1, 1], group=g))
        elif op == "batch_norm2d":
            c = int(node["num_features"])
            args = [param(node, n, (c,)) for n in ("weight", "bias", "running_mean", "running_var")]
            onnx_nodes.append(helper.make_node(
                "BatchNormalization", [x] + args, [name], name=name,
                epsilon=float(node.get("eps", 1e-5))))
        elif op in ("max_pool2d", "avg_pool2d"):
            k = int(node["kernel_size"])
            s = node.get("stride")
            s = k if s is None else int(s)
            onnx_nodes.append(helper.make_node(
                "MaxPool" if op == "max_pool2d" else "AveragePool", [x], [name], name=name,
                kernel_shape=[k, k], strides=[s, s], pads=[0, 0, 0, 0], ceil_mode=0))
        elif op == "global_avg_pool":
            onnx_nodes.append(helper.make_node(
                "GlobalAveragePool", [x], [f"{name}.gap"], name=f"{name}.gap"))
            onnx_nodes.append(helper.make_node(
                "Flatten", [f"{name}.gap"], [name], name=name, axis=1))
        elif op == "relu":
            onnx_nodes.append(helper.make_node("Relu", [x], [name], name=name))
        elif op == "flatten":
            onnx_nodes.append(helper.make_node("Flatten", [x], [name], name=name, axis=1))
        elif op == "add":
            onnx_nodes.append(helper.make_node("Add", ins, [name], name=name))
        elif op == "dropout":
            onnx_nodes.append(helper.make_node("Identity", [x], [name], name=name))
        else:
            raise SpecError(f"node `{name}`: op `{op}` is not known to this script")

    out = spec["output"]
    if out not in {n["name"] for n in spec["nodes"]}:
        raise SpecError(f"output `{out}` is no node")
    graph = helper.make_graph(
        onnx_nodes,
        spec.get("name", "sculpt"),
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch"] + input_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", num_classes])],
        initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="sculpt-ort-peer")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def export(name: str, model_dir: Path, out_dir: Path) -> dict:
    """Writes model.onnx and model.int8.onnx for one model directory and checks both."""
    spec, tensors = load_model_dir(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f32_path, int8_path = out_dir / "model.onnx", out_dir / "model.int8.onnx"
    onnx.save(build_onnx(spec, tensors), str(f32_path))
    # quantize_dynamic logs a root-logger warning advising its pre-processing step (shape
    # inference and graph optimisation for static quantization); not needed here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(build_onnx(spec, tensors, linear_as_matmul=True), str(int8_path),
                         weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)

    shape = [1] + [int(s) for s in spec["input_shape"]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    logits = {}
    for prec, path in (("f32", f32_path), ("int8", int8_path)):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"input": x})
        if y.shape != (1, int(spec["num_classes"])) or not np.all(np.isfinite(y)):
            raise SpecError(f"{path}: logits of shape {list(y.shape)} "
                            f"(finite: {bool(np.all(np.isfinite(y)))}), expected "
                            f"[1, {spec['num_classes']}] and finite")
        logits[prec] = y
    q_ops = [n.op_type for n in onnx.load(str(int8_path)).graph.node
             if n.op_type in ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul")]
    if not q_ops:
        raise SpecError(f"{int8_path}: quantize_dynamic quantized no layer")
    n_layers = sum(1 for n in spec["nodes"] if n.get("op") in ("linear", "conv2d"))
    return {
        "name": name,
        "dir": str(model_dir),
        "spec_name": spec.get("name"),
        "input_shape": [int(s) for s in spec["input_shape"]],
        "num_classes": int(spec["num_classes"]),
        "weight_quant_in_spec": bool(spec.get("weight_quant")),
        "onnx_f32": str(f32_path),
        "onnx_int8": str(int8_path),
        "onnx_f32_bytes": f32_path.stat().st_size,
        "onnx_int8_bytes": int8_path.stat().st_size,
        "int8_quantized_layers": len(q_ops),
        "weight_layers": n_layers,
        "int8_vs_f32_max_abs_logit_diff": float(np.max(np.abs(logits["int8"] - logits["f32"]))),
    }


# --------------------------------------------------------------------------------------
# Optional accuracy check on MNIST (a check that the export is the same network)
# --------------------------------------------------------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    import gzip
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(d: Path, stem: str) -> Path:
    for p in (d / stem, d / f"{stem}.gz"):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{d}: no {stem}[.gz]")


def mnist_accuracy(info: dict, mnist_dir: Path) -> dict:
    """Test accuracy of both ONNX files. Pixels are standardised with one mean and
    deviation over the whole training set; sculpt uses its training split (90%), so the
    figure can differ from metrics.json in the last digits."""
    train = _read_idx(_find_idx(mnist_dir, "train-images-idx3-ubyte")).astype(np.float64) / 255
    mean, sd = train.mean(), train.std()
    x = (_read_idx(_find_idx(mnist_dir, "t10k-images-idx3-ubyte")).astype(np.float64) / 255
         - mean) / sd
    x = x.astype(np.float32).reshape([-1] + info["input_shape"])
    y = _read_idx(_find_idx(mnist_dir, "t10k-labels-idx1-ubyte")).astype(np.int64)
    acc = {}
    for prec in PRECISIONS:
        sess = ort.InferenceSession(info[f"onnx_{prec}"], providers=["CPUExecutionProvider"])
        pred = np.concatenate([sess.run(None, {"input": x[i:i + 1000]})[0].argmax(1)
                               for i in range(0, len(x), 1000)])
        acc[prec] = float((pred == y).mean())
    try:
        metrics = json.loads((Path(info["dir"]) / "metrics.json").read_text())
        acc["metrics_json_test_accuracy"] = metrics.get("test_accuracy")
    except (OSError, ValueError):
        pass
    return acc


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------

def stats_ms(times_ns: np.ndarray) -> dict:
    ms = times_ns.astype(np.float64) / 1e6
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "runs": int(ms.size),
    }


def time_ort(onnx_path: str, x: np.ndarray, threads: int, warmup: int, runs: int,
             spin: bool) -> dict:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    out_names = [o.name for o in sess.get_outputs()]
    run = sess.run
    for _ in range(warmup):
        run(out_names, feed)
    times = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        t0 = clock()
        run(out_names, feed)
        times[i] = clock() - t0
    del sess
    return stats_ms(times)


def time_sculpt(sculpt: Path, model_dir: str, batch: int, threads: int, runs: int,
                timeout: float) -> dict:
    cmd = [str(sculpt), "latency", "measure", "--model", model_dir, "--batch", str(batch),
           "--threads", str(threads), "--runs", str(runs), "--json"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"`{' '.join(cmd)}` took longer than {timeout} s")
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}: "
                           f"{(p.stderr or p.stdout).strip()[-2000:]}")
    obj = _parse_json_object(p.stdout)
    if obj is None:
        raise RuntimeError(f"`{' '.join(cmd)}` printed no JSON object: {p.stdout.strip()[-2000:]}")
    for key in ("median_ms", "p90_ms"):
        if not isinstance(obj.get(key), (int, float)):
            raise RuntimeError(f"`{' '.join(cmd)}`: JSON has no number `{key}`: {obj}")
    return obj


def _parse_json_object(text: str):
    text = text.strip()
    try:
        obj = json.loads(text)
        return obj if isinstance(obj, dict) else None
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj
            except ValueError:
                continue
    return None


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _named_dirs(values: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, sep, d = v.partition("=")
        if not sep:
            name, d = Path(v.rstrip("/")).name, v
        if not name or not d:
            raise SystemExit(f"{flag} {v!r}: expected NAME=DIR or DIR")
        if name in out:
            raise SystemExit(f"{flag}: `{name}` given twice")
        out[name] = d
    return out


def target_dir() -> Path:
    """Cargo's target directory: $CARGO_TARGET_DIR if set; else the repository's target/
    if it holds a release build; else the justfile's default (~/.cache/sculpt-target) if
    that exists; else target/."""
    env = os.environ.get("CARGO_TARGET_DIR")
    if env:
        return Path(env)
    local = REPO / "target"
    just = Path.home() / ".cache" / "sculpt-target"
    if not (local / "release" / "sculpt").exists() and just.is_dir():
        return just
    return local


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Batch-1 latency of onnxruntime next to sculpt's runtime, on sculpt "
                    "model directories.")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                    help="a sculpt model directory (f32); repeatable. NAME defaults to the "
                         "directory's name")
    ap.add_argument("--int8-model", action="append", default=[], metavar="NAME=DIR",
                    help="sculpt's 8-bit version of model NAME, timed for sculpt's int8 "
                         "cells (without one, sculpt's int8 cell of NAME is skipped)")
    ap.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=2000, help="timed runs per round and peer")
    ap.add_argument("--warmup", type=int, default=200, help="ORT warm-up runs per round")
    ap.add_argument("--rounds", type=int, default=5,
                    help="rounds; each round times every cell once on each peer")
    ap.add_argument("--sculpt", default=str(target_dir() / "release" / "sculpt"),
                    help="the sculpt binary (default: TARGET/release/sculpt, TARGET being "
                         "$CARGO_TARGET_DIR, else target/ or the justfile's "
                         "~/.cache/sculpt-target; now %(default)s)")
    ap.add_argument("--no-sculpt", action="store_true", help="time onnxruntime only")
    ap.add_argument("--sculpt-timeout", type=float, default=900.0,
                    help="seconds allowed for one sculpt measurement")
    ap.add_argument("--no-spin", action="store_true",
                    help="turn off ORT's thread-pool spin-waiting (on by default in ORT)")
    ap.add_argument("--out", default=str(target_dir() / "ort-peer"),
                    help="where the ONNX files go: OUT/NAME/model.onnx and "
                         "OUT/NAME/model.int8.onnx (default: %(default)s)")
    ap.add_argument("--export-only", action="store_true",
                    help="write and check the ONNX files, time nothing")
    ap.add_argument("--check-mnist", metavar="DIR",
                    help="also report the ONNX models' test accuracy on the MNIST files in DIR")
    ap.add_argument("--json-out", metavar="FILE", help="write all per-round data as JSON")
    args = ap.parse_args(argv)

    for flag in ("runs", "rounds", "batch"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag} must be at least 1")
    if args.warmup < 0 or any(t < 1 for t in args.threads):
        ap.error("--warmup must be >= 0 and --threads >= 1")
    models = _named_dirs(args.model, "--model")
    int8_models = _named_dirs(args.int8_model, "--int8-model")
    for name in int8_models:
        if name not in models:
            ap.error(f"--int8-model {name}: no --model named `{name}` "
                     f"(models: {', '.join(models)})")
    for d in list(models.values()) + list(int8_models.values()):
        if not Path(d).is_dir():
            ap.error(f"{d}: not a directory")

    sculpt = None
    if not args.no_sculpt and not args.export_only:
        sculpt = Path(args.sculpt)
        if not (sculpt.is_file() and os.access(sculpt, os.X_OK)):
            ap.error(f"no sculpt binary at {sculpt} (build it with `cargo build --release`, "
                     "give --sculpt PATH, or time ORT alone with --no-sculpt)")

    print(f"# onnxruntime peer: batch-{args.batch} latency")
    print()
    print(f"- CPU: {cpu_name()} ({os.cpu_count()} logical CPUs)")
    print(f"- onnxruntime {ort.__version__} (onnx {onnx.__version__}, numpy {np.__version__}, "
          f"Python {platform.python_version()})")
    if not args.export_only:
        print(f"- sculpt: {'not timed (--no-sculpt)' if sculpt is None else sculpt}")
        print(f"- {args.rounds} rounds x {args.runs} runs per peer and cell "
              f"(ORT warm-up {args.warmup}); ORT spin-waiting "
              f"{'off' if args.no_spin else 'on'}")
    print()
    sys.stdout.flush()

    infos = {}
    for name, d in models.items():
        try:
            infos[name] = export(name, Path(d), Path(args.out) / name)
        except SpecError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        i = infos[name]
        print(f"exported {name}: {i['onnx_f32']} ({i['onnx_f32_bytes']} B), "
              f"{i['onnx_int8']} ({i['onnx_int8_bytes']} B, {i['int8_quantized_layers']} of "
              f"{i['weight_layers']} weight layers quantized; int8 vs f32 max |logit diff| "
              f"{i['int8_vs_f32_max_abs_logit_diff']:.4g} on one random input)", file=sys.stderr)
        if i["weight_quant_in_spec"]:
            print(f"warning: {name}: model.toml has weight_quant entries; ORT's f32 cell runs "
                  "its (already rounded) weights as plain f32", file=sys.stderr)
        if args.check_mnist:
            i["mnist_accuracy"] = mnist_accuracy(i, Path(args.check_mnist))
            print(f"  {name} MNIST test accuracy: {i['mnist_accuracy']}", file=sys.stderr)

    result = {
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "settings": {"batch": args.batch, "runs": args.runs, "warmup": args.warmup,
                     "rounds": args.rounds, "threads": args.threads,
                     "precisions": args.precision, "ort_spinning": not args.no_spin,
                     "sculpt": None if sculpt is None else str(sculpt),
                     "ort_int8": "quantize_dynamic(weight_type=QInt8) of the f32 model "
                                 "(Linear as MatMul+Add)"},
        "models": infos,
        "int8_models": int8_models,
        "rounds": [],
    }
    if args.export_only:
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        return 0

    cells = [(m, p, t) for m in models for p in args.precision for t in args.threads]
    sculpt_failed: dict[tuple, str] = {}
    for r in range(args.rounds):
        # Alternate which peer goes first, so neither always runs on a just-warmed machine.
        order = ("ort", "sculpt") if r % 2 == 0 else ("sculpt", "ort")
        for (m, prec, threads) in cells:
            info = infos[m]
            x = np.random.default_rng(0).standard_normal(
                [args.batch] + info["input_shape"]).astype(np.float32)
            sculpt_dir = models[m] if prec == "f32" else int8_models.get(m)
            row = {"round": r, "model": m, "precision": prec, "threads": threads,
                   "batch": args.batch, "order": list(order), "ort": None, "sculpt": None}
            for peer in order:
                if peer == "ort":
                    row["ort"] = time_ort(info[f"onnx_{prec}"], x, threads, args.warmup,
                                          args.runs, spin=not args.no_spin)
                elif sculpt is not None and sculpt_dir is not None:
                    key = (m, prec, threads)
                    if key in sculpt_failed:
                        row["sculpt_error"] = "skipped after an earlier failure"
                        continue
                    row["sculpt_model"] = sculpt_dir
                    try:
                        row["sculpt"] = time_sculpt(sculpt, sculpt_dir, args.batch, threads,
                                                    args.runs, args.sculpt_timeout)
                    except RuntimeError as e:
                        sculpt_failed[key] = str(e)
                        row["sculpt_error"] = str(e)
                        print(f"error: sculpt, {m} {prec} {threads} thread(s): {e}",
                              file=sys.stderr)
            if row["sculpt"] is not None:
                row["ratio_sculpt_over_ort"] = row["sculpt"]["median_ms"] / row["ort"]["median_ms"]
            result["rounds"].append(row)
            s = row["sculpt"]
            print(f"round {r + 1}/{args.rounds} {m} {prec} t{threads}: ORT median "
                  f"{row['ort']['median_ms']:.4f} ms"
                  + ("" if s is None else f", sculpt median {s['median_ms']:.4f} ms"),
                  file=sys.stderr)
            sys.stderr.flush()

    summary = []
    for (m, prec, threads) in cells:
        rows = [row for row in result["rounds"]
                if (row["model"], row["precision"], row["threads"]) == (m, prec, threads)]
        sc = [row["sculpt"] for row in rows if row["sculpt"] is not None]
        summary.append({
            "model": m, "precision": prec, "threads": threads,
            "ort_median_ms": median([row["ort"]["median_ms"] for row in rows]),
            "ort_p90_ms": median([row["ort"]["p90_ms"] for row in rows]),
            "sculpt_median_ms": median([s["median_ms"] for s in sc]),
            "sculpt_p90_ms": median([s["p90_ms"] for s in sc]),
            # Paired per round: the median of the per-round ratios.
            "ratio_sculpt_over_ort": median([row.get("ratio_sculpt_over_ort") for row in rows]),
            "sculpt_rounds": len(sc),
        })
    result["summary"] = summary
    result["sculpt_errors"] = {" ".join(map(str, k)): v for k, v in sculpt_failed.items()}

    print("| model | precision | threads | ORT median ms | ORT p90 ms | sculpt median ms "
          "| sculpt p90 ms | sculpt/ORT |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for s in summary:
        print(f"| {s['model']} | {s['precision']} | {s['threads']} | {fmt(s['ort_median_ms'])} "
              f"| {fmt(s['ort_p90_ms'])} | {fmt(s['sculpt_median_ms'])} "
              f"| {fmt(s['sculpt_p90_ms'])} | {fmt(s['ratio_sculpt_over_ort'], 2)} |")
    print()
    print(f"Each figure is the median over {args.rounds} rounds of that round's median "
          f"(or p90) of {args.runs} single `run` calls; sculpt/ORT is the median of the "
          "per-round ratios. ORT int8 = quantize_dynamic (QInt8 weights, activations "
          "quantized at run time) of the f32 model.")
    if sculpt is not None:
        missing = sorted({m for m in models if "int8" in args.precision and m not in int8_models})
        if missing:
            print(f"sculpt int8 not timed for {', '.join(missing)} (no --int8-model given).")
    if sculpt_failed:
        print(f"sculpt failed (its cell shows –; exit status 1) for: "
              f"{'; '.join(' '.join(map(str, k)) + ' threads' for k in sculpt_failed)}.")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"per-round data: {args.json_out}", file=sys.stderr)
    return 1 if sculpt_failed else 0


if __name__ == "__main__":
    sys.exit(main())
