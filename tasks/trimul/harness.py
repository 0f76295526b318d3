"""Correctness check and GPU benchmark for TriMul solutions.

A solution is a Python file defining `custom_kernel(inputs) -> output` (see README.md). It is only
ever imported in a child process (`python -m sia.tasks.trimul.run_solution`, own session, killed on
timeout), never in the caller:

* check(): the child writes each output to a file; the caller builds the same inputs, runs the
  reference itself and compares (tolerance.compare), so the verdict does not depend on the solution.
* benchmark(): check() first, then, on a CUDA machine only, a child times custom_kernel per shape
  with CUDA events (warm-up, then each repeat on fresh inputs, re-checked against the reference in
  that child). Without CUDA it reports timing as unavailable and gives no number.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

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


def _run_child(args: list[str], device: str, timeout: float) -> tuple[int | None, str]:
    """Run run_solution in its own session; (returncode or None on timeout, output tail). Its process
    group is killed when it ends or times out (a grandchild that calls setsid itself escapes that)."""
    env = dict(os.environ)
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"  # Triton kernels run in its NumPy interpreter on CPU tensors
    else:
        env.pop("TRITON_INTERPRET", None)
    # Output goes to a file, not a pipe: a grandchild that keeps the pipe open can't stall us.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "sia.tasks.trimul.run_solution", *args],
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline, finished = time.monotonic() + timeout, False
        while not finished and time.monotonic() < deadline:  # wait without reaping (WNOWAIT) ...
            finished = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            time.sleep(0 if finished else 0.05)
        try:  # ... so the group id is still ours: end the solution and anything it left running
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code = proc.wait()
        log.seek(max(0, log.seek(0, os.SEEK_END) - 8000))
        return (code if finished else None), _tail(log.read().decode(errors="replace"))


def _exit_text(code: int | None, timeout: float, output: str) -> str:
    if code is None:
        text = f"timed out after {timeout:g}s (solution process killed)"
    elif code < 0:
        text = f"solution process killed by signal {signal.Signals(-code).name}"
    else:
        text = f"solution process exited with code {code}"
    return text + (f"; its output ends: {output}" if output else "")


def check(solution: str | os.PathLike, shapes=TEST_SHAPES, seeds=(0, 1), device: str | None = None,
          timeout: float = 300.0) -> dict:
    """Run `solution` on every (shape, seed) and compare each output with the reference.

    Returns {"ok", "reason", "device", "cases": [{"shape", "seed", "ok", "reason"}]}; never raises
    for anything the solution does.
    """
    device = device or default_device()
    path = Path(solution).resolve()
    cases = [dict(shape, seed=seed) for shape in shapes for seed in seeds]
    result = {"ok": False, "reason": "", "device": device, "cases": []}
    if not path.is_file():
        result["reason"] = f"no solution file at {path}"
        return result
    with tempfile.TemporaryDirectory(prefix="trimul_check_") as tmp:
        tmp = Path(tmp)
        (tmp / "cases.json").write_text(json.dumps(cases))
        code, output = _run_child(["check", "--solution", str(path), "--cases", str(tmp / "cases.json"),
                                   "--outdir", str(tmp), "--device", device], device, timeout)
        if (tmp / "import_error.txt").exists():
            result["reason"] = "could not import the solution: " + _tail((tmp / "import_error.txt").read_text())
            return result
        for k, case in enumerate(cases):
            out_file, err_file = tmp / f"case_{k}.pt", tmp / f"case_{k}.error.txt"
            if out_file.exists():
                try:
                    out = torch.load(out_file, map_location="cpu", weights_only=True)
                except Exception as e:  # noqa: BLE001 - a malformed file is the solution's failure
                    ok, reason = False, f"unreadable output file: {e}"
                else:
                    ok, reason = compare(out, reference_kernel(make_inputs(**case, device=device)))
            elif err_file.exists():
                ok, reason = False, "custom_kernel raised: " + _tail(err_file.read_text())
            else:
                ok, reason = False, "no output: " + _exit_text(code, timeout, output)
            shape = {key: v for key, v in case.items() if key != "seed"}
            result["cases"].append({"shape": shape, "seed": case["seed"], "ok": ok, "reason": reason})
    failed = [c for c in result["cases"] if not c["ok"]]
    result["ok"] = bool(cases) and not failed
    if failed:
        c = failed[0]
        result["reason"] = (f"{len(failed)} of {len(cases)} cases failed; "
                            f"first {c['shape']} seed {c['seed']}: {c['reason']}")
    elif not cases:
        result["reason"] = "no cases to check"
    return result


def benchmark(solution: str | os.PathLike, shapes=BENCHMARK_SHAPES, check_shapes=TEST_SHAPES,
              check_seeds=(0,), warmup: int = 3, repeats: int = 10, seed: int = 1000,
              timeout: float = 600.0) -> dict:
    """Correctness on `check_shapes`, then (CUDA only) the mean CUDA-event time per shape in µs and
    score_us = their geometric mean. Without CUDA: {"available": False, "reason": "no CUDA device",
    "score_us": None, ...} with the correctness result, and no time of any kind."""
    correctness = check(solution, check_shapes, check_seeds, timeout=timeout)
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
    with tempfile.TemporaryDirectory(prefix="trimul_bench_") as tmp:
        tmp = Path(tmp)
        (tmp / "shapes.json").write_text(json.dumps(list(shapes)))
        code, output = _run_child(["bench", "--solution", str(Path(solution).resolve()),
                                   "--shapes", str(tmp / "shapes.json"), "--out", str(tmp / "out.json"),
                                   "--warmup", str(warmup), "--repeats", str(repeats), "--seed", str(seed)],
                                  "cuda", timeout)
        try:
            report = json.loads((tmp / "out.json").read_text())
        except (OSError, ValueError):
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
