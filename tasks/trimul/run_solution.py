"""Child process of the harness: the only place a solution module is ever imported.

    python -m sia.tasks.trimul.run_solution check --solution F --cases CASES.json --outdir D --device cpu
    python -m sia.tasks.trimul.run_solution bench --solution F --shapes SHAPES.json --out R.json
                                              [--warmup W] [--repeats R] [--seed S]

check: for case k it writes D/case_{k}.pt (the output tensor, moved to CPU) or D/case_{k}.error.txt;
       the caller compares against the reference itself, outside this process.
bench: times custom_kernel with CUDA events per shape (warm-up, then `repeats` calls each on fresh
       inputs from a new seed, each output re-checked against the reference) and writes R.json.
A failure to import the solution is written to D/import_error.txt (check) or R.json (bench).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import traceback
from pathlib import Path

import torch

from sia.tasks.trimul.reference import make_inputs, reference_kernel
from sia.tasks.trimul.tolerance import compare


def load_solution(path: str):
    spec = importlib.util.spec_from_file_location("trimul_solution", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["trimul_solution"] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "custom_kernel", None)):
        raise ImportError(f"{path} defines no callable custom_kernel(inputs)")
    return module.custom_kernel


def short_error() -> str:
    return traceback.format_exc(limit=-3)[-4000:]


def run_check(args) -> int:
    outdir = Path(args.outdir)
    cases = json.loads(Path(args.cases).read_text())
    try:
        kernel = load_solution(args.solution)
    except BaseException:
        (outdir / "import_error.txt").write_text(short_error())
        return 3
    for k, case in enumerate(cases):
        try:
            inputs = make_inputs(**case, device=args.device)
            out = kernel(inputs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"custom_kernel returned {type(out).__name__}, not a torch.Tensor")
            torch.save(out.detach().to("cpu").contiguous(), outdir / f"case_{k}.pt")
        except BaseException:
            (outdir / f"case_{k}.error.txt").write_text(short_error())
    return 0


def time_shape(kernel, shape: dict, warmup: int, repeats: int, seed: int) -> dict:
    inputs = make_inputs(**shape, seed=seed, device="cuda")
    for _ in range(warmup):
        kernel(inputs)
    torch.cuda.synchronize()
    times_us = []
    for r in range(repeats):
        inputs = make_inputs(**shape, seed=seed + 1 + r, device="cuda")  # fresh data every repeat
        ref = reference_kernel(inputs)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        out = kernel(inputs)
        end.record()
        torch.cuda.synchronize()
        times_us.append(start.elapsed_time(end) * 1000.0)
        ok, reason = compare(out, ref)
        if not ok:
            return {"shape": shape, "ok": False, "reason": f"repeat {r} (seed {seed + 1 + r}): {reason}"}
        del inputs, ref, out
    return {"shape": shape, "ok": True, "mean_us": sum(times_us) / len(times_us), "times_us": times_us}


def run_bench(args) -> int:
    out_path = Path(args.out)
    if not torch.cuda.is_available():
        out_path.write_text(json.dumps({"error": "no CUDA device in the benchmark process"}))
        return 2
    try:
        kernel = load_solution(args.solution)
    except BaseException:
        out_path.write_text(json.dumps({"error": "import failed:\n" + short_error()}))
        return 3
    results = []
    for shape in json.loads(Path(args.shapes).read_text()):
        try:
            results.append(time_shape(kernel, shape, args.warmup, args.repeats, args.seed))
        except BaseException:
            results.append({"shape": shape, "ok": False, "reason": short_error()})
        out_path.write_text(json.dumps({"results": results}))  # partial results survive a later crash
        if not results[-1]["ok"]:
            break
        torch.cuda.empty_cache()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sia.tasks.trimul.run_solution")
    sub = p.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("check")
    c.add_argument("--solution", required=True)
    c.add_argument("--cases", required=True)
    c.add_argument("--outdir", required=True)
    c.add_argument("--device", default="cpu")
    b = sub.add_parser("bench")
    b.add_argument("--solution", required=True)
    b.add_argument("--shapes", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--seed", type=int, default=1000)
    args = p.parse_args(argv)
    return run_check(args) if args.mode == "check" else run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
