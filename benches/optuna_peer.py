#!/usr/bin/env python3
"""Optuna's samplers as a peer for sculpt's `bench-search`.

Runs one Optuna sampler (random, NSGA-II, GP or TPE) for K seeds on one of the benchmark
problems sculpt's `bench-search` runs (a compression table read from parquet, or the
synthetic ZDT1/ZDT2/ZDT3/DTLZ2), and reports the fraction of the true hypervolume reached
after 50, 100, 200 and N evaluations: median and quartiles over the seeds.

The hypervolume is computed here (exact 2-D sweep, exact 3-D slab sweep), not by Optuna.

See benches/README-optuna.md for the venv and the command lines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
import warnings

import numpy as np

PROG = "optuna_peer.py"
SAMPLERS = ("random", "nsga2", "gp", "tpe")  # plus the hidden "grid" (table only)
PROBLEMS = ("table", "zdt1", "zdt2", "zdt3", "dtlz2")
OBJECTIVE_COLUMNS = ("accuracy", "latency_ms", "size_bytes")
CHECKPOINTS = (50, 100, 200)
TRACE_FIXED = ("strategy", "seed", "eval_index")


class UsageError(Exception):
    """A bad command line or input file: one line on stderr, exit code 2."""


# --------------------------------------------------------------------------------------
# Hypervolume (minimisation; points outside the reference box contribute nothing)
# --------------------------------------------------------------------------------------

def _inside(points: np.ndarray, ref: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=float).reshape(-1, len(ref))
    return points[np.all(points < ref, axis=1)]


def hv2d(points, ref) -> float:
    """Exact 2-D hypervolume: sort by f0 (then f1), sweep keeping the best f1 so far."""
    ref = np.asarray(ref, dtype=float)
    p = _inside(points, ref)
    if len(p) == 0:
        return 0.0
    p = p[np.lexsort((p[:, 1], p[:, 0]))]
    # best f1 among the points before each one (the reference's f1 before the first)
    prev = np.concatenate(([ref[1]], np.minimum.accumulate(p[:-1, 1])))
    gain = np.clip(prev - p[:, 1], 0.0, None)
    return float(np.sum((ref[0] - p[:, 0]) * gain))


def hv3d(points, ref) -> float:
    """Exact 3-D hypervolume: sweep over f2; each slab between consecutive f2 values is
    the 2-D hypervolume of the points at or below it times the slab's thickness."""
    ref = np.asarray(ref, dtype=float)
    p = _inside(points, ref)
    if len(p) == 0:
        return 0.0
    p = p[np.argsort(p[:, 2], kind="stable")]
    z = np.concatenate((p[:, 2], [ref[2]]))
    total = 0.0
    for i in range(len(p)):
        dz = z[i + 1] - z[i]
        if dz > 0.0:
            total += hv2d(p[: i + 1, :2], ref[:2]) * dz
    return float(total)


def hypervolume(points, ref) -> float:
    if len(ref) == 2:
        return hv2d(points, ref)
    if len(ref) == 3:
        return hv3d(points, ref)
    raise ValueError(f"hypervolume: {len(ref)} objectives not supported")


def _hv_inclusion_exclusion(points, ref) -> float:
    """Brute force (union of boxes by inclusion-exclusion), for the self-test only."""
    ref = np.asarray(ref, dtype=float)
    p = [q for q in np.asarray(points, dtype=float) if np.all(q < ref)]
    total = 0.0
    for r in range(1, len(p) + 1):
        for sub in itertools.combinations(p, r):
            corner = np.max(np.array(sub), axis=0)
            total += (-1) ** (r + 1) * float(np.prod(ref - corner))
    return total


def selftest() -> None:
    def close(a, b, what):
        assert abs(a - b) <= 1e-12 * max(1.0, abs(b)), f"{what}: got {a!r}, expected {b!r}"
        print(f"ok  {what}: {a:.12g} (expected {b:.12g})")

    # 2-D, example 1: staircase of three points, ref (1, 1):
    #   (1-0.2)*(1-0.6) + (1-0.5)*(0.6-0.3) + (1-0.8)*(0.3-0.1) = 0.32 + 0.15 + 0.04 = 0.51;
    # plus a dominated point (0.6, 0.7), one outside the box (1.2, 0.0) and one on its
    # edge (0.1, 1.0), none of which adds anything.
    pts = [(0.5, 0.3), (0.2, 0.6), (0.6, 0.7), (1.2, 0.0), (0.8, 0.1), (0.1, 1.0)]
    close(hv2d(pts, (1.0, 1.0)), 0.51, "hv2d example 1")
    # 2-D, example 2: (1,2), (2,1) and a duplicate (1,2), ref (3,3): two 2x1 boxes that
    # overlap in a 1x1 square: 2 + 2 - 1 = 3.
    close(hv2d([(1, 2), (2, 1), (1, 2)], (3, 3)), 3.0, "hv2d example 2")
    # 3-D, example 1: a single point (0.25, 0.5, 0.75) with ref (1, 1, 1):
    #   0.75 * 0.5 * 0.25 = 0.09375; with a point it dominates added, the same.
    close(hv3d([(0.25, 0.5, 0.75), (0.5, 0.5, 0.8)], (1, 1, 1)), 0.09375, "hv3d example 1")
    # 3-D, example 2: (0,.5,.5), (.5,0,.5), (.5,.5,0), ref (1,1,1): each box 0.25, each
    # pair and the triple overlap in [.5,1]^3 = 0.125: 3*0.25 - 3*0.125 + 0.125 = 0.5.
    close(hv3d([(0, .5, .5), (.5, 0, .5), (.5, .5, 0)], (1, 1, 1)), 0.5, "hv3d example 2")
    # Random sets against inclusion-exclusion (ties included by rounding).
    rng = np.random.default_rng(12345)
    for trial in range(200):
        d = 2 + trial % 2
        n = int(rng.integers(1, 9))
        pts = np.round(rng.uniform(0.0, 1.2, size=(n, d)), 1)
        ref = np.full(d, 1.1)
        got, want = hypervolume(pts, ref), _hv_inclusion_exclusion(pts, ref)
        assert abs(got - want) <= 1e-12, f"random set {trial}: {got} vs {want}\n{pts}"
    print("ok  200 random sets (2-D and 3-D, up to 8 points) equal inclusion-exclusion")
    # True hypervolumes of the sampled fronts against their closed forms: the box
    # [0,1.1]^2 above the front over f1 in [0,1], plus the strip f1 in [1,1.1] (0.1*1.1):
    #   ZDT1: int_0^1 (1.1 - (1 - sqrt(x))) dx + 0.11 = 1.1 - 1/3 + 0.11 = 0.876667
    #   ZDT2: int_0^1 (1.1 - (1 - x^2)) dx + 0.11     = 1.1 - 2/3 + 0.11 = 0.543333
    for name, want in (("zdt1", 1.1 - 1 / 3 + 0.11), ("zdt2", 1.1 - 2 / 3 + 0.11)):
        got = true_hv_synthetic(name)
        assert abs(got - want) < 1e-4, f"{name} true HV {got} vs {want}"
        print(f"ok  {name} true HV from the 100001-point front: {got:.6f} (closed form {want:.6f})")
    print(f"    zdt3 true HV from the 100001-point front: {true_hv_synthetic('zdt3'):.6f}")
    print(f"    dtlz2 true HV (closed form 1.1^3 - pi/6): {true_hv_synthetic('dtlz2'):.6f}")
    print("selftest ok")


# --------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------

N_ZDT = 30
DTLZ_M, DTLZ_K = 3, 10
N_DTLZ = DTLZ_M - 1 + DTLZ_K  # 12


def zdt(name: str, x: np.ndarray) -> tuple[float, float]:
    f1 = float(x[0])
    g = 1.0 + 9.0 * float(np.sum(x[1:])) / (len(x) - 1)
    r = f1 / g
    if name == "zdt1":
        h = 1.0 - math.sqrt(r)
    elif name == "zdt2":
        h = 1.0 - r * r
    else:  # zdt3
        h = 1.0 - math.sqrt(r) - r * math.sin(10.0 * math.pi * f1)
    return f1, g * h


def dtlz2(x: np.ndarray) -> tuple[float, float, float]:
    g = float(np.sum((x[DTLZ_M - 1:] - 0.5) ** 2))
    a, b = x[0] * math.pi / 2, x[1] * math.pi / 2
    return (
        (1 + g) * math.cos(a) * math.cos(b),
        (1 + g) * math.cos(a) * math.sin(b),
        (1 + g) * math.sin(a),
    )


def _nondominated_2d(p: np.ndarray) -> np.ndarray:
    p = p[np.lexsort((p[:, 1], p[:, 0]))]
    prev = np.concatenate(([np.inf], np.minimum.accumulate(p[:-1, 1])))
    return p[p[:, 1] < prev]


def true_hv_synthetic(name: str) -> float:
    if name == "dtlz2":
        return 1.1 ** 3 - math.pi / 6
    f1 = np.linspace(0.0, 1.0, 100001)
    if name == "zdt1":
        f2 = 1.0 - np.sqrt(f1)
    elif name == "zdt2":
        f2 = 1.0 - f1 ** 2
    else:
        f2 = 1.0 - np.sqrt(f1) - f1 * np.sin(10.0 * np.pi * f1)
    front = _nondominated_2d(np.column_stack((f1, f2)))
    return hv2d(front, (1.1, 1.1))


class Synthetic:
    def __init__(self, name: str):
        self.name = name
        self.n_var = N_DTLZ if name == "dtlz2" else N_ZDT
        self.n_obj = 3 if name == "dtlz2" else 2
        self.ref = np.full(self.n_obj, 1.1)
        self.true_hv = true_hv_synthetic(name)
        self.dim_names = [f"x{i}" for i in range(self.n_var)]
        self.obj_names = [f"f{i}" for i in range(self.n_obj)]

    def evaluate(self, trial) -> tuple[list[float], list[float], list[float]]:
        """Returns (dimension values, raw objectives, normalised objectives)."""
        x = np.array([trial.suggest_float(n, 0.0, 1.0) for n in self.dim_names])
        f = list(dtlz2(x) if self.name == "dtlz2" else zdt(self.name, x))
        return list(map(float, x)), f, f


def _is_arithmetic(values: list[float]) -> bool:
    if len(values) < 3:
        return True
    gaps = np.diff(np.asarray(values, dtype=float))
    scale = float(np.max(np.abs(gaps)))
    return bool(np.all(np.abs(gaps - gaps[0]) <= 1e-9 * scale))


class Table:
    def __init__(self, path: str, objective: str):
        import pandas as pd

        if not os.path.isfile(path):
            raise UsageError(f"table file not found: {path}")
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # noqa: BLE001 - any reader error is a bad input file
            raise UsageError(f"cannot read {path} as parquet: {e}".splitlines()[0]) from e
        df.columns = [str(c) for c in df.columns]
        cost = "latency_ms" if objective == "latency" else "size_bytes"
        missing = [c for c in ("accuracy", cost) if c not in df.columns]
        if missing:
            raise UsageError(
                f"{path}: no objective column(s) {', '.join(missing)} "
                f"(columns: {', '.join(df.columns)})")
        self.name = "table"
        self.cost = cost
        self.dim_names = [c for c in df.columns if c not in OBJECTIVE_COLUMNS]
        if not self.dim_names:
            raise UsageError(f"{path}: no dimension columns (only objective columns)")
        clash = [c for c in self.dim_names if c in TRACE_FIXED or c in ("error", cost)]
        if clash:
            raise UsageError(f"{path}: dimension column name(s) {', '.join(clash)} are reserved")
        if len(df) == 0:
            raise UsageError(f"{path}: the table has no rows")
        for c in ("accuracy", cost):
            if not pd.api.types.is_numeric_dtype(df[c]) or df[c].isna().any():
                raise UsageError(f"{path}: objective column {c} must be numeric without gaps")
        acc = df["accuracy"].to_numpy(dtype=float)
        if acc.min() < 0.0 or acc.max() > 1.0:
            raise UsageError(f"{path}: accuracy must be a fraction in [0, 1] "
                             f"(found {acc.min():g}..{acc.max():g})")

        # Dimensions: sorted distinct values; ordinal when they are evenly spaced.
        self.values: dict[str, list] = {}
        self.ordinal: dict[str, bool] = {}
        cols = []
        for name in self.dim_names:
            col = df[name]
            if col.isna().any():
                raise UsageError(f"{path}: dimension column {name} has missing values")
            if pd.api.types.is_numeric_dtype(col):
                vals = [float(v) for v in col.to_numpy(dtype=float)]
                self.values[name] = sorted(set(vals))
                self.ordinal[name] = _is_arithmetic(self.values[name])
            else:  # not numbers: categorical by their text
                vals = [str(v) for v in col]
                self.values[name] = sorted(set(vals))
                self.ordinal[name] = False
            cols.append(vals)

        error = 1.0 - acc
        costv = df[cost].to_numpy(dtype=float)
        raw = np.column_stack((error, costv))
        lo, hi = raw.min(axis=0), raw.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        norm = (raw - lo) / span
        self.lo, self.span = lo, span

        self.rows: dict[tuple, int] = {}
        keys = list(zip(*cols))
        for i, key in enumerate(keys):
            if key in self.rows:
                raise UsageError(
                    f"{path}: rows {self.rows[key]} and {i} have the same dimension values "
                    f"{dict(zip(self.dim_names, key))}")
            self.rows[key] = i
        n_combos = math.prod(len(self.values[n]) for n in self.dim_names)
        if len(self.rows) != n_combos:
            for combo in itertools.product(*(self.values[n] for n in self.dim_names)):
                if combo not in self.rows:
                    raise UsageError(
                        f"{path}: {n_combos} combinations of the dimensions but "
                        f"{len(self.rows)} rows; e.g. no row for "
                        f"{dict(zip(self.dim_names, combo))}")
        self.raw, self.norm = raw, norm
        self.n_obj = 2
        self.ref = np.array([1.1, 1.1])
        self.true_hv = hv2d(norm, self.ref)
        if self.true_hv <= 0.0:
            raise UsageError(f"{path}: the table's hypervolume is 0 (all rows the same?)")
        self.obj_names = ["error", cost]

    def describe(self) -> str:
        parts = []
        for n in self.dim_names:
            kind = "ordinal" if self.ordinal[n] else "categorical"
            parts.append(f"{n} ({kind}, {len(self.values[n])} values)")
        return (f"{len(self.rows)} rows; dimensions: {', '.join(parts)}; "
                f"objectives: error, {self.cost}; true HV {self.true_hv:.6f}")

    def choose(self, trial) -> list:
        chosen = []
        for n in self.dim_names:
            vals = self.values[n]
            if self.ordinal[n]:
                chosen.append(vals[trial.suggest_int(n, 0, len(vals) - 1)])
            else:
                chosen.append(trial.suggest_categorical(n, vals))
        return chosen

    def evaluate(self, trial) -> tuple[list, list[float], list[float]]:
        chosen = self.choose(trial)
        i = self.rows.get(tuple(chosen))
        if i is None:  # cannot happen after the check in __init__
            raise RuntimeError(f"no table row for {dict(zip(self.dim_names, chosen))}")
        return chosen, [float(v) for v in self.raw[i]], [float(v) for v in self.norm[i]]

    def grid_space(self) -> dict[str, list]:
        return {n: (list(range(len(self.values[n]))) if self.ordinal[n] else self.values[n])
                for n in self.dim_names}


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------

def make_sampler(optuna, name: str, seed: int, args, problem):
    s = optuna.samplers
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "nsga2":
        return s.NSGAIISampler(population_size=args.population, seed=seed)
    if name == "gp":
        return s.GPSampler(seed=seed)
    if name == "tpe":
        # multivariate=False set explicitly. In Optuna 5.0 the default (None) means True for
        # one objective and False for several, so for these problems it is the default;
        # older versions default to False. --tpe-multivariate turns it on.
        return s.TPESampler(seed=seed, multivariate=args.tpe_multivariate)
    if name == "grid":
        return s.GridSampler(problem.grid_space(), seed=seed)
    raise ValueError(name)


def run_one(optuna, problem, sampler_name: str, seed: int, budget: int, args):
    records: list[tuple[int, list, list[float], list[float]]] = []

    def objective(trial):
        dims, raw, norm = problem.evaluate(trial)
        records.append((trial.number, dims, raw, norm))
        return tuple(raw)

    sampler = make_sampler(optuna, sampler_name, seed, args, problem)
    study = optuna.create_study(directions=["minimize"] * problem.n_obj, sampler=sampler)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=budget)
    seconds = time.perf_counter() - t0
    records.sort(key=lambda r: r[0])
    return records, seconds


def checkpoints(budget: int) -> list[int]:
    return sorted({c for c in CHECKPOINTS if c <= budget} | {budget})


def summarise(fractions: np.ndarray) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(fractions, [25, 50, 75])  # numpy default: linear
    return float(med), float(q1), float(q3)


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Optuna's samplers on sculpt's bench-search problems: fraction of the "
                    "true hypervolume after 50, 100, 200 and N evaluations.")
    ap.add_argument("--problem", choices=PROBLEMS, help="benchmark problem")
    ap.add_argument("--sampler", choices=SAMPLERS + ("grid",), metavar="{" + ",".join(SAMPLERS) + "}",
                    help="Optuna sampler")
    ap.add_argument("--budget", type=int, help="evaluations per run (N)")
    ap.add_argument("--seeds", type=int, default=10, help="runs, seeded 0..K-1 (default 10)")
    ap.add_argument("--table", help="parquet table (for --problem table)")
    ap.add_argument("--objective", choices=("latency", "size"), default="latency",
                    help="table's second objective: latency_ms or size_bytes (default latency)")
    ap.add_argument("--population", type=int, default=50,
                    help="NSGA-II population size (default 50)")
    ap.add_argument("--tpe-multivariate", action="store_true",
                    help="TPESampler(multivariate=True) (default False)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    ap.add_argument("--trace", metavar="FILE", help="write every evaluated point as parquet")
    ap.add_argument("--selftest", action="store_true",
                    help="check the hypervolume routines and exit")
    args = ap.parse_args(argv)
    if args.selftest:
        return args
    if args.problem is None or args.sampler is None or args.budget is None:
        raise UsageError("--problem, --sampler and --budget are required")
    if args.budget < 1:
        raise UsageError(f"--budget must be at least 1 (got {args.budget})")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1 (got {args.seeds})")
    if args.population < 2:
        raise UsageError(f"--population must be at least 2 (got {args.population})")
    if args.problem == "table" and not args.table:
        raise UsageError("--problem table needs --table FILE")
    if args.problem == "table" and not os.path.isfile(args.table):
        raise UsageError(f"table file not found: {args.table}")
    if args.sampler == "grid" and args.problem != "table":
        raise UsageError("--sampler grid is for --problem table only")
    return args


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        if args.selftest:
            selftest()
            return 0
        problem = Table(args.table, args.objective) if args.problem == "table" \
            else Synthetic(args.problem)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if args.sampler == "grid":  # GridSampler warns when a grid is exhausted early etc.
        warnings.filterwarnings("ignore", category=UserWarning, module="optuna")

    cps = checkpoints(args.budget)
    fractions = np.zeros((args.seeds, len(cps)))
    seconds = []
    trace_rows = []
    n_evals = []
    for seed in range(args.seeds):
        records, secs = run_one(optuna, problem, args.sampler, seed, args.budget, args)
        seconds.append(secs)
        n_evals.append(len(records))
        norm = np.array([r[3] for r in records], dtype=float).reshape(-1, problem.n_obj)
        for j, k in enumerate(cps):
            fractions[seed, j] = hypervolume(norm[:k], problem.ref) / problem.true_hv
        if args.trace:
            for idx, (_, dims, raw, _) in enumerate(records):
                row = {"strategy": args.sampler, "seed": seed, "eval_index": idx}
                row.update(zip(problem.dim_names, dims))
                row.update(zip(problem.obj_names, raw))
                trace_rows.append(row)
        if not args.json:
            print(f"  seed {seed}: {len(records)} evaluations, {secs:.2f} s, "
                  f"fraction {fractions[seed, -1]:.3f}", file=sys.stderr)

    stats = [summarise(fractions[:, j]) for j in range(len(cps))]
    sec_med = float(np.median(seconds))

    if args.trace:
        import pandas as pd

        cols = list(TRACE_FIXED) + problem.dim_names + problem.obj_names
        pd.DataFrame(trace_rows, columns=cols).to_parquet(args.trace, index=False)

    if args.json:
        out = {
            "problem": args.problem,
            "sampler": args.sampler,
            "budget": args.budget,
            "seeds": args.seeds,
            "hv_fraction_at": {str(k): s[0] for k, s in zip(cps, stats)},
            "quartiles_at": {str(k): [s[1], s[2]] for k, s in zip(cps, stats)},
            "seconds_median": sec_med,
            "optuna": optuna.__version__,
            "true_hypervolume": problem.true_hv,
        }
        if args.problem == "table":
            out["table"] = args.table
            out["objective"] = problem.cost
        if args.sampler == "nsga2":
            out["population"] = args.population
        if args.sampler == "tpe":
            out["tpe_multivariate"] = args.tpe_multivariate
        print(json.dumps(out))
        return 0

    label = f"{args.problem} {args.sampler}"
    if args.problem == "table":
        print(f"table {args.table} ({problem.cost}): {problem.describe()}")
    seeds_word = "seed" if args.seeds == 1 else "seeds"
    for k, (med, q1, q3) in zip(cps, stats):
        print(f"{label}: after {k} evaluations, median {med:.3f} of the true hypervolume "
              f"(quartiles {q1:.3f}-{q3:.3f}), {args.seeds} {seeds_word}")
    if min(n_evals) < args.budget:
        print(f"{label}: note: some runs stopped early ({min(n_evals)} evaluations; "
              f"the grid was exhausted)")
    per_eval = sec_med / max(1, int(np.median(n_evals)))
    print(f"{label}: wall time per run, median {sec_med:.2f} s "
          f"({per_eval * 1000:.1f} ms per evaluation), optuna {optuna.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
