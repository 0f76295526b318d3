"""GPU check: the harness's timings against a direct CUDA-event timing of the same calls.

    python -m sia.tasks.trimul.gpu_check [--repeats 10] [--warmup 3] [--json results.json] [--unsafe-sandbox]

For the PyTorch reference and the Triton solution it (1) runs harness.benchmark (correctness on the
test shapes, then per-shape CUDA-event means in a child process) and (2) imports the same solution
here and times the same custom_kernel calls (same seeds, warm-up and repeat counts) directly with CUDA
events, printing both per shape and their ratio. The harness runs each solution in SIA's sandbox, and
the check prints which isolation level that was (`sandbox.runner.isolation_level`); `--unsafe-sandbox`
allows rlimits only where bubblewrap cannot run. Exit 0 when everything was correct and timed, 1 when
something failed, 2 when there is no CUDA device (nothing is timed then), 3 when the sandbox is
unavailable and `--unsafe-sandbox` was not given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

PUBLISHED_H100_US = {"baseline (PyTorch reference)": 12483, "best human": 1371, "TTT-Discover": 1161, "SIA": 1017}
SOLUTION_NAMES = ("pytorch_reference", "triton_matmul")


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def time_direct(kernel, shapes, warmup: int, repeats: int, seed: int) -> list[float]:
    """Mean µs per shape of kernel(inputs) between two CUDA events, on the harness's seeds."""
    from sia.tasks.trimul.reference import make_inputs
    means = []
    for shape in shapes:
        inputs = make_inputs(**shape, seed=seed, device="cuda")
        for _ in range(warmup):
            kernel(inputs)
        times = []
        for r in range(repeats):
            inputs = make_inputs(**shape, seed=seed + 1 + r, device="cuda")
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            kernel(inputs)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) * 1000.0)
        means.append(sum(times) / len(times))
        del inputs
        torch.cuda.empty_cache()
    return means


def shape_text(s: dict) -> str:
    return f"N={s['N']:<5} B={s['B']} C={s['C']:<4} {s['distribution']:<6} {'mask' if s['masked'] else 'no mask'}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sia.tasks.trimul.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--json", help="also write every result to this file")
    p.add_argument("--unsafe-sandbox", action="store_true",
                   help="where bubblewrap cannot isolate the solutions, run them with rlimits only")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine, so nothing was timed and no number is reported.\n"
              "Run `python -m sia.tasks.trimul.gpu_check` on a machine with an NVIDIA GPU; on CPU use\n"
              "`python -m sia.tasks.trimul.harness SOLUTION.py` for correctness (Triton in its interpreter).")
        return 2
    os.environ.pop("TRITON_INTERPRET", None)  # compiled Triton for the solutions imported here
    from sia.config import SandboxLimits
    from sia.sandbox.runner import SandboxUnavailable, isolation_level
    from sia.tasks.trimul import harness
    from sia.tasks.trimul.run_solution import load_solution

    try:
        isolation = isolation_level(SandboxLimits(gpu=True, allow_unsafe=args.unsafe_sandbox))
    except SandboxUnavailable as error:
        print(f"gpu_check: {error}")
        return 3
    print(f"gpu_check on {torch.cuda.get_device_name()} (torch {torch.__version__}), "
          f"warm-up {args.warmup}, repeats {args.repeats}, sandbox isolation: {isolation}")
    report, all_ok = {"device": torch.cuda.get_device_name(), "isolation": isolation, "solutions": {}}, True
    for name in SOLUTION_NAMES:
        path = harness.SOLUTIONS / f"{name}.py"
        res = harness.benchmark(path, warmup=args.warmup, repeats=args.repeats, seed=args.seed,
                                allow_unsafe=args.unsafe_sandbox)
        entry = {"harness": res}
        print(f"\n== {name}: correctness {'ok' if res['correct'] else 'FAILED'}"
              + ("" if res["correct"] else f" ({res['correctness']['reason']})"))
        if res["score_us"] is None:
            print(f"   harness gave no score: {res['reason']}")
            all_ok = False
            report["solutions"][name] = entry
            continue
        kernel = load_solution(str(path))
        direct = time_direct(kernel, harness.BENCHMARK_SHAPES, args.warmup, args.repeats, args.seed)
        entry["direct_mean_us"] = direct
        entry["direct_score_us"] = geomean(direct)
        print(f"   {'shape':<38} {'harness µs':>12} {'direct µs':>12} {'ratio':>7}")
        for r, d in zip(res["shapes"], direct):
            print(f"   {shape_text(r['shape']):<38} {r['mean_us']:>12.1f} {d:>12.1f} {r['mean_us'] / d:>7.3f}")
        print(f"   {'geometric mean (score)':<38} {res['score_us']:>12.1f} {entry['direct_score_us']:>12.1f} "
              f"{res['score_us'] / entry['direct_score_us']:>7.3f}")
        report["solutions"][name] = entry
    scores = {n: e["harness"]["score_us"] for n, e in report["solutions"].items() if e["harness"]["score_us"]}
    if len(scores) == 2:
        speedup = scores["pytorch_reference"] / scores["triton_matmul"]
        print(f"\ntriton_matmul vs pytorch_reference: {speedup:.3g}x faster")
    print("published H100 scores (µs): " + ", ".join(f"{k} {v:,}" for k, v in PUBLISHED_H100_US.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
