"""The TriMul kernel task: the reference against naive loops, and the harness judging solutions it
runs in a sandboxed child process (Triton under TRITON_INTERPRET=1 on CPU; timing only on CUDA)."""

from __future__ import annotations

import math
import os
import time
import uuid
from pathlib import Path

import pytest
import torch

from sia.tasks.trimul import gpu_check, harness
from sia.tasks.trimul.reference import HIDDEN, make_inputs, reference_kernel
from sia.tasks.trimul.tolerance import compare

SMALL = harness.TEST_SHAPES[:2]  # N=16, C=32: one unmasked normal, one masked cauchy


def naive_trimul(inputs) -> torch.Tensor:
    """The operator written out element by element in float64 Python, sharing no code with reference.py."""
    x, mask = inputs["x"].double().tolist(), inputs["mask"].tolist()
    w = {k: v.double().tolist() for k, v in inputs["weights"].items()}
    B, N, C = len(x), len(x[0]), len(x[0][0][0])

    def layer_norm(v, g, b):
        mu = sum(v) / len(v)
        var = sum((a - mu) ** 2 for a in v) / len(v)
        return [(a - mu) / math.sqrt(var + 1e-5) * gi + bi for a, gi, bi in zip(v, g, b)]

    def matvec(W, v):
        return [sum(wi * vi for wi, vi in zip(row, v)) for row in W]

    def sig(a):
        return 1.0 / (1.0 + math.exp(-a))

    out = []
    for b in range(B):
        L, R, G = {}, {}, {}
        for i in range(N):
            for k in range(N):
                xn, m = layer_norm(x[b][i][k], w["norm.weight"], w["norm.bias"]), mask[b][i][k]
                for side, store in (("left", L), ("right", R)):
                    proj, gate = matvec(w[f"{side}_proj.weight"], xn), matvec(w[f"{side}_gate.weight"], xn)
                    store[i, k] = [p * m * sig(g) for p, g in zip(proj, gate)]
                G[i, k] = [sig(g) for g in matvec(w["out_gate.weight"], xn)]
        rows = []
        for i in range(N):
            row = []
            for j in range(N):
                t = [sum(L[i, k][h] * R[j, k][h] for k in range(N)) for h in range(HIDDEN)]
                t = layer_norm(t, w["to_out_norm.weight"], w["to_out_norm.bias"])
                row.append(matvec(w["to_out.weight"], [a * g for a, g in zip(t, G[i, j])]))
            rows.append(row)
        out.append(rows)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("distribution,masked", [("normal", False), ("cauchy", True)])
def test_reference_matches_naive_loops(distribution, masked):
    inputs = make_inputs(B=2, N=5, C=8, distribution=distribution, masked=masked, seed=3)
    if masked:
        assert 0 < inputs["mask"].sum() < inputs["mask"].numel()  # the mask really masks something
    ref = reference_kernel(inputs)
    assert ref.shape == (2, 5, 5, 8) and ref.dtype == torch.float32
    torch.testing.assert_close(ref.double(), naive_trimul(inputs), rtol=1e-4, atol=1e-4)


def test_inputs_are_deterministic_per_seed():
    a, b, c = (make_inputs(1, 8, 16, "cauchy", True, seed=s) for s in (7, 7, 8))
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["mask"], b["mask"])
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert not torch.equal(a["x"], c["x"])
    assert torch.equal(make_inputs(1, 8, 16, masked=False)["mask"], torch.ones(1, 8, 8))


def test_tolerance_handles_nan_and_inf_positions():
    ref = torch.tensor([1.0, -2.0, float("nan"), float("inf"), float("-inf"), 0.0])
    assert compare(ref.clone(), ref) == (True, "")  # NaN/inf at the same places pass
    near = ref.clone()
    near[0], near[5] = 1.039, -0.019  # inside 0.02 + 0.02*|ref|
    assert compare(near, ref)[0]
    for pos, val, why in [(0, 1.05, "outside"), (5, 0.021, "outside"),
                          (1, float("nan"), "NaN positions differ"), (2, 0.0, "NaN positions differ"),
                          (3, float("-inf"), "inf positions differ"), (3, 1e30, "inf positions differ"),
                          (0, float("inf"), "inf positions differ")]:
        bad = ref.clone()
        bad[pos] = val
        ok, reason = compare(bad, ref)
        assert not ok and why in reason and f"[{pos}]" in reason, (pos, val, reason)
    assert "wrong shape" in compare(ref[:3], ref)[1]
    assert "wrong dtype" in compare(ref.double(), ref)[1]


@pytest.mark.parametrize("name", ["pytorch_reference", "triton_matmul"])
def test_harness_accepts_the_shipped_solutions(name):
    res = harness.check(harness.SOLUTIONS / f"{name}.py", harness.TEST_SHAPES, seeds=(0, 1), timeout=240)
    assert res["ok"], res["reason"]
    assert res["device"] == harness.default_device()
    assert len(res["cases"]) == 2 * len(harness.TEST_SHAPES) and all(c["ok"] for c in res["cases"])


def solution(tmp_path: Path, body: str, name: str = "solution.py") -> Path:
    path = tmp_path / name
    path.write_text("import os, sys, time, torch\nfrom sia.tasks.trimul.reference import reference_kernel\n" + body)
    return path


WRONG = {
    "skips the mask": ("def custom_kernel(inputs):\n"
                       "    return reference_kernel(dict(inputs, mask=torch.ones_like(inputs['mask'])))\n",
                       "outside |out-ref|"),
    "NaN where the reference has none": ("def custom_kernel(inputs):\n"
                                         "    out = reference_kernel(inputs)\n    out[0, 3, 4, 5] = float('nan')\n"
                                         "    return out\n", "NaN positions differ"),
    "wrong shape": ("def custom_kernel(inputs):\n    return reference_kernel(inputs)[..., :-1]\n", "wrong shape"),
    "wrong dtype": ("def custom_kernel(inputs):\n    return reference_kernel(inputs).double()\n", "wrong dtype"),
    "not a tensor": ("def custom_kernel(inputs):\n    return reference_kernel(inputs).tolist()\n", "not a torch.Tensor"),
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_harness_rejects_a_wrong_solution_with_its_reason(tmp_path, kind):
    body, why = WRONG[kind]
    res = harness.check(solution(tmp_path, body), SMALL, seeds=(0,), timeout=120)
    assert not res["ok"] and why in res["reason"], res["reason"]
    unmasked, masked = res["cases"]
    assert not masked["ok"] and why in masked["reason"]
    # skipping the mask is only wrong where there is a mask
    assert unmasked["ok"] == (kind == "skips the mask"), unmasked


def test_the_verdict_is_reached_outside_the_solution_process(tmp_path):
    body = ("import sia.tasks.trimul.tolerance as t\n"
            "t.compare = lambda *a, **k: (True, '')  # tampering only reaches its own process\n"
            "def custom_kernel(inputs):\n    return torch.zeros_like(inputs['x'])\n")
    res = harness.check(solution(tmp_path, body), SMALL[:1], seeds=(0,), timeout=120)
    assert not res["ok"] and "outside" in res["reason"]
    assert compare(torch.zeros(2), torch.ones(2))[0] is False  # and the caller's compare is untouched


def test_a_solution_runs_sandboxed_without_the_callers_environment_or_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_TEST_SECRET", "hunter2")
    private = tmp_path / "private.txt"
    private.write_text("gold answers")
    private.chmod(0o600)
    body = ("def custom_kernel(inputs):\n"
            "    try:\n        seen = open(" + repr(str(private)) + ").read()\n"
            "    except OSError as exc:\n        seen = type(exc).__name__\n"
            "    raise RuntimeError(f'uid={os.getuid()} secret={os.environ.get(\"SIA_TEST_SECRET\")} file={seen}')\n")
    res = harness.check(solution(tmp_path, body), SMALL[:1], seeds=(0,), timeout=120)
    reason = res["cases"][0]["reason"]
    assert "custom_kernel raised" in reason and "secret=None" in reason and "gold answers" not in reason, reason
    if os.geteuid() == 0:  # the sandbox drops root
        assert "uid=0 " not in reason, reason


def _running(token: str) -> list[int]:
    """Live processes whose command line holds `token` (seen from the host, whatever pid namespace
    the sandbox gives them)."""
    pids = []
    for proc in (p for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            zombie = (proc / "stat").read_text().split(") ")[1][0] == "Z"
            if token.encode() in (proc / "cmdline").read_bytes() and not zombie:
                pids.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def _sleep_token() -> str:
    """A `sleep` duration no other process on this machine uses: finds the solution's child in /proc."""
    return f"600.{uuid.uuid4().int % 10**9:09d}"


CRASHES = {
    "raises": ("def custom_kernel(inputs):\n    raise ValueError('kernel launch failed: boom')\n",
               "custom_kernel raised: "),
    "exits": ("def custom_kernel(inputs):\n    os._exit(7)\n", "exited with code 7"),
    "segfaults": ("import ctypes\ndef custom_kernel(inputs):\n    ctypes.string_at(0)\n", "killed by signal SIGSEGV"),
    "no custom_kernel": ("def kernel(inputs):\n    return reference_kernel(inputs)\n", "could not import the solution"),
    "syntax error": ("def custom_kernel(inputs) return 1\n", "could not import the solution"),
}


@pytest.mark.parametrize("kind", list(CRASHES))
def test_a_crashing_solution_is_reported_not_raised(tmp_path, kind):
    body, why = CRASHES[kind]
    res = harness.check(solution(tmp_path, body), SMALL, seeds=(0,), timeout=120)
    assert not res["ok"] and why in res["reason"], res["reason"]
    if kind == "raises":
        assert "boom" in res["reason"]


def test_a_hanging_solution_is_killed_at_the_timeout(tmp_path):
    token = _sleep_token()
    body = ("import subprocess\n"
            "def custom_kernel(inputs):\n"
            f"    subprocess.Popen(['sleep', {token!r}])\n"
            "    time.sleep(600)\n")
    start = time.monotonic()
    res = harness.check(solution(tmp_path, body), SMALL, seeds=(0,), timeout=10)
    assert time.monotonic() - start < 40
    assert not res["ok"] and "timed out after 10s" in res["reason"], res["reason"]
    assert all("timed out" in c["reason"] for c in res["cases"])
    deadline = time.monotonic() + 5
    while _running(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(token)  # everything the solution started is gone


def test_processes_a_solution_leaves_behind_are_ended(tmp_path):
    token = _sleep_token()
    body = ("import subprocess\n"
            f"subprocess.Popen(['sleep', {token!r}])\n"
            "def custom_kernel(inputs):\n    return reference_kernel(inputs)\n")
    res = harness.check(solution(tmp_path, body), SMALL[:1], seeds=(0,), timeout=120)
    assert res["ok"], res["reason"]
    deadline = time.monotonic() + 5
    while _running(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(token)


def _numbers_under(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers_under(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers_under(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_benchmark_without_cuda_gives_no_number_but_still_checks(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = harness.benchmark(harness.SOLUTIONS / "pytorch_reference.py", check_shapes=SMALL)
    assert res["available"] is False and res["reason"] == "no CUDA device" and res["score_us"] is None
    assert res["correct"] and res["correctness"]["device"] == "cpu"
    numbers = [p for p, _ in _numbers_under(res)]  # shape sizes and seeds only: no time of any kind
    assert numbers and all(".shape." in p or p.endswith(".seed") for p in numbers), numbers
    wrong = harness.benchmark(solution(tmp_path, WRONG["skips the mask"][0]), check_shapes=SMALL)
    assert wrong["available"] is False and wrong["score_us"] is None and not wrong["correct"]


def test_gpu_check_without_cuda_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().out


def test_gpu_check_stops_where_the_sandbox_is_unavailable_and_the_waiver_reaches_every_child(monkeypatch, capsys):
    from sia.sandbox import runner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "stand-in GPU")
    monkeypatch.setattr(runner, "missing_protections", lambda: ["bubblewrap (apt install bubblewrap)"])
    assert gpu_check.main([]) == 3  # nothing runs unisolated unless asked
    assert "cannot be isolated here" in capsys.readouterr().out
    waivers = []

    def child(args, work, device, timeout, output_bytes=0, *, allow_unsafe=False, **_):
        waivers.append(allow_unsafe)
        return 1, "stand-in child: no output"

    monkeypatch.setattr(harness, "_run_child", child)
    assert gpu_check.main(["--unsafe-sandbox"]) == 1  # every solution fails its correctness check here
    out = capsys.readouterr().out
    assert "sandbox isolation: unsafe" in out and "correctness FAILED" in out
    assert waivers and all(waivers)
