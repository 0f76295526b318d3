"""Correctness check and GPU benchmark for TriMul solutions.

A solution is a Python file defining `custom_kernel(inputs) -> output` (see README.md). It is only
ever imported in a child process (`python -m sia.tasks.trimul.run_solution`), never in the caller,
and that child runs in the sandbox (`sandbox.runner`: its own uid, a scrubbed environment, limits,
everything it started killed at the end or on timeout) on a copy of the solution and its inputs in
its own working folder; on a CUDA machine the sandbox gets the GPU's device nodes. Its output
files are read back as untrusted (`sandbox.files`):

* check(): the child writes each output to a file; the caller builds the same inputs, runs the
  reference itself and compares (tolerance.compare), so the verdict does not depend on the solution.
* benchmark(): check() first, then, on a CUDA machine only, a child times custom_kernel per shape
  with CUDA events (warm-up, then each repeat on fresh inputs, re-checked against the reference in
  that child). Without CUDA it reports timing as unavailable and gives no number.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sys
from pathlib import Path

import torch

from sia.config import SandboxLimits
from sia.files import copy_private_file, private_scratch, write_private_text
from sia.sandbox.files import UnsafeOutput, read_child_file
from sia.sandbox.runner import run_sandboxed
from sia.tasks.trimul.reference import make_inputs, reference_kernel
from sia.tasks.trimul.tolerance import compare

SOLUTIONS = Path(__file__).resolve().parent / "solutions"


def _shape(N, B, C, distribution, masked):
    return {"B": B, "N": N, "C": C, "distribution": distribution, "masked": masked}


BENCHMARK_SHAPES = [
    _shape(256, 2, 128, "normal", False), _shape(768, 1, 128, "cauchy", False),
    _shape(256, 2, 384, "normal", True), _shape(512, 1, 128, "normal", False),
    _shape(1024, 1, 128, "cauchy", False), _shape(768, 1, 384, "normal", True),
    _shape(1024, 1, 384, "normal", False),
]
TEST_SHAPES = [
    _shape(16, 1, 32, "normal", False), _shape(16, 2, 32, "cauchy", True),
    _shape(32, 1, 128, "normal", True), _shape(32, 2, 128, "cauchy", False),
]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _tail(text: str, n: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def _output_bytes(case: dict) -> int:
    """The most bytes a case's output file may have: float32 [B, N, N, C] twice over (a float64
    output still loads, to be rejected with its dtype), plus room for the file's framing."""
    return 8 * case["B"] * case["N"] * case["N"] * case["C"] + (1 << 20)


def _limits(device: str, timeout: float, output_bytes: int) -> SandboxLimits:
    """The sandbox's limits for one solution process: torch starts a thread per core and Triton
    compiles with a C compiler, so more processes and CPU seconds than an agent gets; the working
    folder must hold every output. On a GPU the sandbox sets no RLIMIT_AS (CUDA maps far more
    address space than it touches) and the control group bounds host memory."""
    cores, output_mb = os.cpu_count() or 1, output_bytes // (1 << 20) + 1
    return SandboxLimits(wall_timeout_s=timeout, cpu_time_s=max(1200, math.ceil(timeout * cores)),
                         memory_mb=(65_536 if device == "cuda" else 16_384) + output_mb, processes=64 + 4 * cores,
                         open_files=1024, disk_mb=256 + output_mb, file_size_mb=256 + output_mb, gpu=device == "cuda")


def _run_child(args: list[str], work: Path, device: str, timeout: float, output_bytes: int = 0, *,
               sandbox=None, python: str | None = None, allow_unsafe: bool = False) -> tuple[int | None, str]:
    """Run run_solution in the sandbox in `work` (which holds its inputs and gets its outputs,
    `output_bytes` at most); (returncode or None on timeout, output tail). `sandbox`: a
    `sandbox.runner.SandboxRunner` (default: `run_sandboxed` itself); `allow_unsafe` carries the
    caller's `--unsafe-sandbox` waiver into this child's limits."""
    env = {"TRITON_INTERPRET": "1"} if device == "cpu" else {}  # Triton's NumPy interpreter on CPU tensors
    # Which GPU to use is the caller's choice, not a secret.
    env |= {name: os.environ[name] for name in ("CUDA_VISIBLE_DEVICES",) if name in os.environ}
    argv = [python or sys.executable, "-m", "sia.tasks.trimul.run_solution", *args]
    limits = _limits(device, timeout, output_bytes).model_copy(update={"allow_unsafe": allow_unsafe})
    result = (sandbox.run(argv, work, env, limits) if sandbox is not None
              else run_sandboxed(argv, work, env, limits))
    return (None if result.timed_out else result.returncode), _tail(result.stdout + result.stderr)


_TEXT_BYTES = 1 << 20  # an error text or benchmark report the solution's process writes, at most


def _case_verdict(work: Path, k: int, case: dict, device: str, code: int | None, timeout: float,
                  output: str) -> tuple[bool, str]:
    """(ok, reason) of case `k` from what the solution's process left in `work` (untrusted:
    read with `read_child_file`, the tensor loaded with weights_only)."""
    try:
        tensor = read_child_file(work, f"case_{k}.pt", max_bytes=_output_bytes(case))
        error = read_child_file(work, f"case_{k}.error.txt", max_bytes=_TEXT_BYTES)
    except UnsafeOutput as exc:
        return False, f"unreadable output file: {exc}"
    if tensor is not None:
        try:
            out = torch.load(io.BytesIO(tensor), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a malformed file is the solution's failure
            return False, f"unreadable output file: {e}"
        return compare(out, reference_kernel(make_inputs(**case, device=device)))
    if error is not None:
        return False, "custom_kernel raised: " + _tail(error.decode(errors="replace"))
    return False, "no output: " + _exit_text(code, timeout, output)


def _exit_text(code: int | None, timeout: float, output: str) -> str:
    if code is None:
        text = f"timed out after {timeout:g}s (solution process killed)"
    elif code < 0:
        text = f"solution process killed by signal {signal.Signals(-code).name}"
    else:
        text = f"solution process exited with code {code}"
    return text + (f"; its output ends: {output}" if output else "")


def check(solution: str | os.PathLike, shapes=TEST_SHAPES, seeds=(0, 1), device: str | None = None,
          timeout: float = 300.0, *, cases: list[dict] | None = None, timing: tuple[int, int] | None = None,
          sandbox=None, python: str | None = None, allow_unsafe: bool = False) -> dict:
    """Run `solution` on every (shape, seed) and compare each output with the reference.

    Returns {"ok", "reason", "device", "cases": [{"shape", "seed", "ok", "reason"}]}; never raises
    for anything the solution does. `cases` (dicts of shape and seed) replaces shapes x seeds.
    With `timing` = (warm-up, repeats), every case also gets "ref_s" and "sol_s" (median seconds
    per call of the reference and of the solution, measured in the solution's child: CUDA events
    on a GPU, wall clock on CPU) or "timing_error". `sandbox`, `python`, `allow_unsafe`: see `_run_child`.
    """
    device = device or default_device()
    path = Path(solution).resolve()
    cases = [dict(c) for c in cases] if cases is not None else [dict(shape, seed=seed) for shape in shapes
                                                                 for seed in seeds]
    result = {"ok": False, "reason": "", "device": device, "cases": []}
    if not path.is_file():
        result["reason"] = f"no solution file at {path}"
        return result
    with private_scratch("trimul_check_") as work:
        copy_private_file(path, work / "solution.py")
        write_private_text(work / "cases.json", json.dumps(cases))
        timed = ["--time-warmup", str(timing[0]), "--time-repeats", str(timing[1])] if timing else []
        code, output = _run_child(["check", "--solution", "solution.py", "--cases", "cases.json", "--outdir", ".",
                                   "--device", device, *timed], work, device, timeout, sum(map(_output_bytes, cases)),
                                  sandbox=sandbox, python=python, allow_unsafe=allow_unsafe)
        try:
            import_error = read_child_file(work, "import_error.txt", max_bytes=_TEXT_BYTES)
        except UnsafeOutput as exc:
            import_error = f"unreadable import_error.txt: {exc}".encode()
        if import_error is not None:
            result["reason"] = "could not import the solution: " + _tail(import_error.decode(errors="replace"))
            return result
        times = _timings(work) if timing else {}
        for k, case in enumerate(cases):
            ok, reason = _case_verdict(work, k, case, device, code, timeout, output)
            shape = {key: v for key, v in case.items() if key != "seed"}
            result["cases"].append({"shape": shape, "seed": case["seed"], "ok": ok, "reason": reason,
                                    **(_case_times(times.get(str(k))) if timing else {})})
    failed = [c for c in result["cases"] if not c["ok"]]
    result["ok"] = bool(cases) and not failed
    if failed:
        c = failed[0]
        result["reason"] = (f"{len(failed)} of {len(cases)} cases failed; "
                            f"first {c['shape']} seed {c['seed']}: {c['reason']}")
    elif not cases:
        result["reason"] = "no cases to check"
    return result


def _timings(work: Path) -> dict:
    """The child's timings.json (untrusted): {case index: {...}}, or {} when it left none."""
    try:
        data = json.loads(read_child_file(work, "timings.json", max_bytes=_TEXT_BYTES) or b"{}")
    except (UnsafeOutput, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def _case_times(entry) -> dict:
    """{"ref_s", "sol_s"} of one case when both are positive finite numbers, else {"timing_error"}."""
    if not isinstance(entry, dict):
        return {"timing_error": "not timed (the solution process stopped first)"}
    values = [entry.get("ref_s"), entry.get("sol_s")]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values):
        return {"ref_s": float(values[0]), "sol_s": float(values[1])}
    return {"timing_error": _tail(str(entry.get("error") or "no time for this case"), 1000)}


def benchmark(solution: str | os.PathLike, shapes=BENCHMARK_SHAPES, check_shapes=TEST_SHAPES,
              check_seeds=(0,), warmup: int = 3, repeats: int = 10, seed: int = 1000,
              timeout: float = 600.0, allow_unsafe: bool = False) -> dict:
    """Correctness on `check_shapes`, then (CUDA only) the mean CUDA-event time per shape in µs and
    score_us = their geometric mean. Without CUDA: {"available": False, "reason": "no CUDA device",
    "score_us": None, ...} with the correctness result, and no time of any kind. `allow_unsafe`:
    as in `check`."""
    correctness = check(solution, check_shapes, check_seeds, timeout=timeout, allow_unsafe=allow_unsafe)
    result = {"available": False, "reason": "", "score_us": None,
              "correct": correctness["ok"], "correctness": correctness}
    if not torch.cuda.is_available():
        result["reason"] = "no CUDA device"
        return result
    result["available"] = True
    result["device"] = torch.cuda.get_device_name()
    if not correctness["ok"]:
        result["reason"] = "not timed: failed the correctness check: " + correctness["reason"]
        return result
    with private_scratch("trimul_bench_") as work:
        copy_private_file(Path(solution).resolve(), work / "solution.py")
        write_private_text(work / "shapes.json", json.dumps(list(shapes)))
        code, output = _run_child(["bench", "--solution", "solution.py", "--shapes", "shapes.json", "--out", "out.json",
                                   "--warmup", str(warmup), "--repeats", str(repeats), "--seed", str(seed)],
                                  work, "cuda", timeout, allow_unsafe=allow_unsafe)
        try:
            report = json.loads(read_child_file(work, "out.json", max_bytes=_TEXT_BYTES) or b"")
            report = report if isinstance(report, dict) else {"error": "the benchmark report is not an object"}
        except (UnsafeOutput, ValueError):
            report = {"error": "no readable benchmark report"}
    shape_results = report.get("results", [])
    result["shapes"] = shape_results
    if "error" in report:
        result["reason"] = report["error"] + "; " + _exit_text(code, timeout, output)
    elif len(shape_results) < len(shapes) or not all(r.get("ok") for r in shape_results):
        bad = [r for r in shape_results if not r.get("ok")]
        result["reason"] = (f"{bad[0]['shape']}: {bad[0]['reason']}" if bad
                            else "benchmark stopped early: " + _exit_text(code, timeout, output))
    else:
        means = [r["mean_us"] for r in shape_results]
        result["score_us"] = math.exp(sum(math.log(m) for m in means) / len(means))
    return result


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m sia.tasks.trimul.harness", description=__doc__.split("\n")[0])
    p.add_argument("solution", help="path to a solution .py defining custom_kernel(inputs)")
    p.add_argument("--benchmark", action="store_true", help="also time it (CUDA only)")
    args = p.parse_args(argv)
    if not args.benchmark:
        res = check(args.solution)
        print(json.dumps(res, indent=2))
        return 0 if res["ok"] else 1
    res = benchmark(args.solution)
    print(json.dumps(res, indent=2))
    return 0 if res["correct"] and (res["score_us"] is not None or not res["available"]) else 1


if __name__ == "__main__":
    sys.exit(main())
