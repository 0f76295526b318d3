"""A task's own evaluator script, run in its own sandboxed process after the agent's process
group is gone, with a copy of just the gold answers it needs.

Contract (`"evaluator": "evaluate.py"` in sia_task.json):
`python evaluate.py --predictions P.json --gold G.json --out R.json`, where P maps item id to
the agent's prediction (null when it gave none) and G maps item id to the gold answer. The
evaluator writes R = {"score": number, "items": {item id: number}}; without "items" every item
gets "score" (then keep-best's paired test has nothing to pair and compares means).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from sia.config import SandboxLimits
from sia.files import copy_private_file, make_private_dir, private_scratch, write_private_text
from sia.sandbox.files import UnsafeOutput, read_child_file
from sia.tasks.base import TaskError


class EvaluatorError(TaskError):
    """The task's evaluator failed: the run stops (resumable once the evaluator is fixed)."""


def finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_timed(sandbox, argv: list[str], work: Path, limits: SandboxLimits, timeout_s: float):
    """Run an evaluator in its own sandboxed process under its own time limit; whose fault a
    timeout is, the caller decides (`timed_out_error` when it is the evaluator's)."""
    return sandbox.run(argv, work, {}, limits.model_copy(update={"wall_timeout_s": timeout_s}))


def timed_out_error(path: Path, timeout_s: float, where: str = "") -> EvaluatorError:
    return EvaluatorError(f"{path}: timed out after {timeout_s:g} s{where}; make it faster or raise "
                          "evaluator_timeout_s in sia_task.json, then `sia resume RUN`")


def run_evaluator(path: Path, timeout_s: float, sandbox, limits: SandboxLimits, python: str,
                  predictions: dict[str, str | None], gold: dict[str, str | None]) -> dict[str, float]:
    """Per-item scores from the evaluator script at `path`; raises EvaluatorError naming the file and the fix."""
    fix = "fix it, then `sia resume RUN` continues where the run stopped"
    with private_scratch("sia-eval-") as scratch:
        # The gold answers go into the evaluator's own working folder (handed to the sandbox uid),
        # 0700 with 0600 files like everything here: no other local user reads them meanwhile.
        work = make_private_dir(scratch / "work")
        write_private_text(work / "predictions.json", json.dumps(predictions, ensure_ascii=False))
        write_private_text(work / "gold.json", json.dumps(gold, ensure_ascii=False))
        copy_private_file(path, work / "evaluate.py")
        result = run_timed(sandbox, [python, "evaluate.py", "--predictions", "predictions.json", "--gold", "gold.json",
                                     "--out", "results.json"], work, limits, timeout_s)
        if result.timed_out:
            # The evaluator's: the agent's labels reach it parsed by us and cut to 1,000 characters
            # each, little for a healthy evaluator to choke on (unlike an SIA folder's raw output).
            raise timed_out_error(path, timeout_s)
        if result.returncode != 0:
            raise EvaluatorError(f"{path}: exited with code {result.returncode}: {result.stderr.strip()[-400:]}; {fix}")
        try:
            data = json.loads(read_child_file(work, "results.json", max_bytes=50_000_000) or b"")
        except (UnsafeOutput, ValueError) as exc:
            raise EvaluatorError(f"{path}: wrote no readable JSON to --out ({exc}); {fix}") from None
        if not isinstance(data, dict) or not finite_number(data.get("score")):
            got = data.get("score") if isinstance(data, dict) else data
            raise EvaluatorError(f"{path}: results must hold a finite number 'score', got {got!r}; {fix}")
        items = data.get("items")
        if items is None:
            return {item: float(data["score"]) for item in gold}
        if not isinstance(items, dict) or set(items) != set(gold) or not all(finite_number(v) for v in items.values()):
            raise EvaluatorError(f"{path}: 'items' must map every one of the {len(gold)} item ids to a number; {fix}")
        return {item: float(v) for item, v in items.items()}
