"""A run stopped mid-evaluation (Ctrl-C, SIGTERM: the CLI calls kill_live_sandboxes) must not
score or cache the killed agent's empty output: a resumed run once read such a cache and
reported 0.000 on feedback and test for generation 1 of a LawBench arm."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sia.config import SandboxLimits
from sia.graph.state import Candidate
from sia.nodes.evaluation import EvaluationInterrupted, evaluate
from sia.nodes.common import sha
from sia.sandbox.live import allow_new_sandboxes, kill_live_sandboxes
from sia.sandbox.runner import SandboxResult, run_sandboxed
from tests.fakes import REFERENCE_AGENT, fake_services, make_tiny_task, shutdown


def test_a_sandbox_killed_by_kill_live_sandboxes_says_it_was_interrupted(tmp_path):
    out = {}
    worker = threading.Thread(target=lambda: out.update(r=run_sandboxed(
        ["/usr/bin/sleep", "30"], tmp_path / "w", {}, SandboxLimits(wall_timeout_s=60))))
    worker.start()
    time.sleep(2)
    kill_live_sandboxes()
    worker.join(30)
    assert out["r"].interrupted and not out["r"].timed_out and out["r"].wall_s < 20
    refused = run_sandboxed(["/usr/bin/true"], tmp_path / "w3", {}, SandboxLimits(wall_timeout_s=60))
    assert refused.interrupted and refused.returncode is None  # nothing new starts while stopping
    allow_new_sandboxes()
    again = run_sandboxed(["/usr/bin/true"], tmp_path / "w2", {}, SandboxLimits(wall_timeout_s=60))
    assert again.returncode == 0 and not again.interrupted  # the mark does not outlive its run


class InterruptedSandbox:
    def run(self, *args, **kwargs):
        return SandboxResult(returncode=-9, stdout="", stderr="", timed_out=False, wall_s=1.0, output_truncated=False,
                             killed_leftovers=0, interrupted=True)


def test_an_interrupted_evaluation_is_neither_scored_nor_cached(tmp_path):
    task = make_tiny_task(tmp_path / "task")
    svc = fake_services(tmp_path, "stop", [], [], sandbox=InterruptedSandbox())
    code = REFERENCE_AGENT.read_text()
    path = Path(tmp_path / "agent.py")
    path.write_text(code)
    cand = Candidate(generation=1, lever="meta", scaffold_path=str(path), scaffold_sha=sha(code), adapter=None)
    try:
        with pytest.raises(EvaluationInterrupted):
            evaluate(svc, svc.task(str(task)), cand, ["feedback", "test"])
        assert svc.db.cached_items("stop", cand.scaffold_sha, None, "feedback") == []
        assert svc.db.cached_items("stop", cand.scaffold_sha, None, "test") == []
    finally:
        shutdown(svc)
