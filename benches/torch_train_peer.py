#!/usr/bin/env python3
"""PyTorch peer for sculpt's training throughput on MNIST (CPU).

Trains lenet-300-100 or lenet-5 with AdamW (lr 1e-3, weight decay 1e-4), batch 128 and
cross-entropy over `--samples` training samples (default 60000: one epoch of MNIST's 60k
training images), and prints one JSON line with the training samples per second.

Timed: the training loop only (forward, loss, `loss.item()` every step, backward,
optimizer step, and the per-epoch shuffle), after 5 warm-up steps that are not counted.
Not timed: reading and standardising the data, building the model, the warm-up.

Run with the venv of benches/README-torch.md:
    benches/.venv-torch/bin/python benches/torch_train_peer.py --model lenet-5 --threads 2
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MNIST = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "mnist"))
WARMUP_STEPS = 5


def read_idx(path):
    """Reads an IDX file (gzip or plain) into a numpy array of its stored shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {arr.size} values for shape {dims}")
    return arr.reshape(dims)


def find(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    sys.exit(f"{folder}: no {stem}(.gz)")


def load_train(folder):
    images = read_idx(find(folder, "train-images-idx3-ubyte"))
    labels = read_idx(find(folder, "train-labels-idx1-ubyte"))
    x = images.astype(np.float32) / 255.0
    mean, std = float(x.mean()), float(x.std())  # one scalar each, training images
    x = (x - mean) / std
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def build(model):
    if model == "lenet-300-100":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 300),
            nn.ReLU(),
            nn.Linear(300, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )
    if model == "lenet-5":
        return nn.Sequential(
            nn.Conv2d(1, 20, 5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(20, 50, 5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(800, 500),
            nn.ReLU(),
            nn.Linear(500, 10),
        )
    raise ValueError(model)


def batches(n_train, n_samples, batch, generator):
    """Index tensors of shuffled batches covering n_samples (a new order each epoch;
    the last batch of an epoch may be short, as in sculpt)."""
    left = n_samples
    while left > 0:
        order = torch.randperm(n_train, generator=generator)
        for start in range(0, n_train, batch):
            if left <= 0:
                return
            idx = order[start : start + min(batch, left)]
            left -= len(idx)
            yield idx


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["lenet-300-100", "lenet-5"], default="lenet-300-100")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--samples", type=int, default=60000, help="training samples to time")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--mnist", default=DEFAULT_MNIST, help="folder of MNIST IDX files")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x, y = load_train(args.mnist)
    model = build(args.model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(args.seed)

    def step(idx):
        xb, yb = x[idx], y[idx]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        value = loss.item()
        loss.backward()
        opt.step()
        return value

    # Warm-up (not timed): the first steps allocate buffers and pick kernels.
    for idx in batches(len(x), WARMUP_STEPS * args.batch, args.batch, gen):
        step(idx)

    seen, loss = 0, float("nan")
    start = time.perf_counter()
    for idx in batches(len(x), args.samples, args.batch, gen):
        loss = step(idx)
        if not np.isfinite(loss):
            sys.exit(f"non-finite loss {loss} after {seen} samples")
        seen += len(idx)
    seconds = time.perf_counter() - start

    print(
        json.dumps(
            {
                "framework": "pytorch",
                "torch": torch.__version__,
                "model": args.model,
                "threads": args.threads,
                "batch": args.batch,
                "samples": seen,
                "seconds": round(seconds, 4),
                "samples_per_second": round(seen / seconds, 1),
                "final_loss": round(loss, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
