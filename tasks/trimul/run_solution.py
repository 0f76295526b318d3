"""Child process of the harness: the only place a solution module is ever imported.

    python -m sia.tasks.trimul.run_solution check --solution F --cases CASES.json --outdir D --device cpu
                                              [--time-warmup W --time-repeats R]
    python -m sia.tasks.trimul.run_solution bench --solution F --shapes SHAPES.json --out R.json
                                              [--warmup W] [--repeats R] [--seed S]

check: for case k it writes D/case_{k}.pt (the output tensor, moved to CPU) or D/case_{k}.error.txt;
       the caller compares against the reference itself, outside this process. With --time-repeats R
       it also times each case (the loop task's speed score): W warm-up calls, then R calls each on
       fresh inputs, the reference and the solution interleaved (each solution output re-checked
       here), and writes D/timings.json {k: {"ref_s", "sol_s"} | {"error"}} with the median seconds
       per call: CUDA events on a GPU, the process's wall clock on one thread on CPU (a CPU proxy).
bench: times custom_kernel with CUDA events per shape (warm-up, then `repeats` calls each on fresh
       inputs from a new seed, each output re-checked against the reference) and writes R.json.
A failure to import the solution is written to D/import_error.txt (check) or R.json (bench).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import statistics
import time
import traceback
from pathlib import Path

import torch

from sia.tasks.trimul.reference import make_inputs, reference_kernel
from sia.tasks.trimul.tolerance import compare

# Bound before any solution is imported, so that a solution re-binding time.perf_counter, the
# reference or torch.cuda.Event does not reach these (a deliberately hostile one still can: see run_check).
_clock = time.perf_counter
_Event = torch.cuda.Event
_synchronize = torch.cuda.synchronize
_compare, _make_inputs, _reference = compare, make_inputs, reference_kernel


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


def timing_seed(seed: int, repeat: int) -> int:
    """The seed of a case's `repeat`-th timed call: fresh inputs every call, so nothing cached helps."""
    return int(seed) * 1000 + 1 + repeat


def call_seconds(kernel, inputs: dict, device: str) -> tuple[float, object]:
    """(seconds, output) of one kernel call: CUDA events on a GPU, the wall clock on CPU."""
    if device == "cuda":
        start, end = _Event(enable_timing=True), _Event(enable_timing=True)
        _synchronize()
        start.record()
        out = kernel(inputs)
        end.record()
        _synchronize()
        return start.elapsed_time(end) / 1000.0, out
    start = _clock()
    out = kernel(inputs)
    return _clock() - start, out


def time_case(kernel, case: dict, device: str, warmup: int, repeats: int) -> dict:
    """{"ref_s", "sol_s"}: median seconds per call of the reference and of `kernel` on `case`'s
    shape, interleaved (both on the same fresh inputs each repeat, alternating which goes first) so that a
    change of machine load hits both; `warmup` untimed calls of each first. Each timed output of
    the solution is compared with the reference's (raises when wrong)."""
    shape = {key: v for key, v in case.items() if key != "seed"}
    inputs = _make_inputs(**shape, seed=case["seed"], device=device)
    for _ in range(warmup):
        _reference(inputs)
        kernel(inputs)
    ref_times, sol_times = [], []
    for r in range(repeats):
        inputs = _make_inputs(**shape, seed=timing_seed(case["seed"], r), device=device)
        first_ref = r % 2 == 0  # alternate which runs first: neither gets the other's warm caches every time
        results = {}
        for name in (("ref", "sol") if first_ref else ("sol", "ref")):
            seconds, results[name] = call_seconds(_reference if name == "ref" else kernel, inputs, device)
            (ref_times if name == "ref" else sol_times).append(seconds)
        ref, out = results["ref"], results["sol"]
        ok, reason = _compare(out, ref)
        if not ok:
            raise ValueError(f"wrong on timed call {r}: {reason}")
    return {"ref_s": statistics.median(ref_times), "sol_s": statistics.median(sol_times)}


def run_check(args) -> int:
    """Outputs per case (judged by the caller); with --time-repeats, times too. Times are measured
    in the solution's process, so a solution set on forging them (or on slowing the reference)
    could; the caller caps what a speed-up can earn. Its outputs cannot pass as correct that way."""
    outdir = Path(args.outdir)
    cases = json.loads(Path(args.cases).read_text())
    if args.device == "cpu" and args.time_repeats:
        torch.set_num_threads(1)  # one thread: CPU times that do not swing with other load on the cores
    try:
        kernel = load_solution(args.solution)
    except BaseException:
        (outdir / "import_error.txt").write_text(short_error())
        return 3
    produced = set()
    for k, case in enumerate(cases):
        try:
            inputs = make_inputs(**case, device=args.device)
            out = kernel(inputs)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"custom_kernel returned {type(out).__name__}, not a torch.Tensor")
            torch.save(out.detach().to("cpu").contiguous(), outdir / f"case_{k}.pt")
            produced.add(k)
        except BaseException:
            (outdir / f"case_{k}.error.txt").write_text(short_error())
    if not args.time_repeats:
        return 0
    timings = {}
    for k in sorted(produced):
        try:
            timings[k] = time_case(kernel, cases[k], args.device, args.time_warmup, args.time_repeats)
        except BaseException:
            timings[k] = {"error": short_error()}
        (outdir / "timings.json").write_text(json.dumps({str(k): v for k, v in timings.items()}))
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
    c.add_argument("--time-warmup", type=int, default=1)
    c.add_argument("--time-repeats", type=int, default=0, help="0: no timing")
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
