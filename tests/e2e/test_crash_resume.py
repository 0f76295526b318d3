"""Kill a run with SIGKILL inside `task`, inside `scaffold_rewrite` and inside `finetune`
during training; resume each; check that finished generations were not recomputed and that
the scores equal those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes import make_tiny_task

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _driver(runs: Path, task: Path, run_id: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "tests.e2e.crash_driver", str(runs), str(task), run_id, *extra],
                            cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "the driver never reached the kill point"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _scores(runs: Path, run_id: str) -> list[tuple]:
    rows = json.loads((runs / f"{run_id}.final.json").read_text())
    return [(r["generation"], r["lever"], r["feedback"], r["selection"], r["test"], r["accepted"]) for r in rows]


def _events(runs: Path) -> list[str]:
    return (runs / "events.log").read_text().splitlines()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    task = make_tiny_task(root / "task")
    runs = root / "ref"
    runs.mkdir()
    _finish(_driver(runs, task, "ref"))
    scores = _scores(runs, "ref")
    assert [s[1] for s in scores] == ["meta", "scaffold", "weights"]
    return task, scores


@pytest.mark.parametrize("where", ["task", "scaffold"])
def test_kill_inside_node_then_resume(tmp_path, reference, where):
    task, expected = reference
    runs = tmp_path / "runs"
    runs.mkdir()
    _kill_when(_driver(runs, task, "r", "--pause-at", where), lambda: (runs / "paused").exists())
    before = _events(runs)
    _finish(_driver(runs, task, "r", "--resume"))
    after = _events(runs)[len(before):]
    assert _scores(runs, "r") == expected, (runs / "r" / "summary.json").read_text()
    # generation 1 (meta + its evaluation) finished before the kill: not redone
    assert sum(e == "llm meta EditChoice" for e in after) == 0
    assert sum(e == "sandbox g1" for e in after) == 0
    assert sum(e == "sandbox g1" for e in before) == 2  # selection, then feedback + test
    if where == "task":  # the scaffold was accepted before the kill: no new proposal
        assert not any(e == "llm feedback EditChoice" for e in after)
        # The agent run the kill interrupted left its scratch folder; the resume swept it.
        killed = Path([e for e in before if e.startswith("scratch ")][-1].split(" ", 1)[1])
        assert "swept 1" in after and not killed.exists()


def test_kill_during_training_then_resume(tmp_path, reference):
    task, expected = reference
    runs = tmp_path / "runs"
    runs.mkdir()
    trainer_dir = runs / "r" / "adapters" / "gen_3" / "trainer"
    _kill_when(_driver(runs, task, "r", "--real-trainer"),
               lambda: trainer_dir.is_dir() and any((p / "trainer_state.json").exists() for p in trainer_dir.glob("checkpoint-*")),
               timeout=600)
    before = _events(runs)
    _finish(_driver(runs, task, "r", "--resume", "--real-trainer"), timeout=600)
    after = _events(runs)[len(before):]
    summary = json.loads((runs / "r" / "adapters" / "gen_3" / "train_summary.json").read_text())
    assert summary["resumed_from_step"] and summary["resumed_from_step"] > 0
    assert summary["steps"] == 8
    assert _scores(runs, "r") == expected
    assert not any(e in ("sandbox g1", "sandbox g2") for e in after)
