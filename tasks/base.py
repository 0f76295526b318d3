"""What the loop needs of a task: the `Task` protocol, whose docstrings are the contract, and the
few types every task kind shares. Two kinds implement it: `tasks.csv_task.CsvTask` (our layout:
labelled CSV rows, scored per item) and `tasks.sia_folder.SIAFolderTask` (an unmodified SIA task
folder, scored per tier by its own `evaluate.py`).

An agent runs as `python target_agent.py --dataset_dir D --working_dir W`. The loop hands it a
*view* of what it may read (`write_view`); items carry opaque tags there, so an agent cannot tell
which split an item belongs to. Scoring happens in the parent (`score_output`), against answers the
agent could never open.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from sia.records import ItemResult

if TYPE_CHECKING:
    from sia.config import SandboxLimits

SPLITS = ("feedback", "selection", "test")

Row = dict  # {"id", "text", "label"} (tables add "fields"); label None where the gold stays private
Tags = dict[str, tuple[str, str]]  # tag shown to the agent -> (split, item id)


class TaskError(ValueError):
    """A malformed task folder; the message names the file and the fix."""


@dataclass(frozen=True)
class ItemOutcome:
    """How one item went: what the agent answered (None: nothing), its score, and what went
    wrong for this item (None: nothing). A failed item scores 0 with its error; it never raises."""

    prediction: str | None
    score: float
    error: str | None = None
    metrics: dict[str, float] | None = None  # this item's values of the task's guard metrics, where it reports them


@dataclass(frozen=True)
class Guard:
    """A number beside the task's metric that a candidate must not buy its gain with (macro recall
    beside accuracy, the cell-rescaled Poisson beside a denoising MSE). Keep-best blocks a candidate
    whose guard worsens significantly against the incumbent (the paired test, one-sided the other
    way) by more than `tolerance`, or whose mean on the selection items is past `bound`."""

    name: str
    direction: Literal["max", "min"] = "max"  # which way is better
    bound: float | None = None  # "max": the candidate's mean must be at least this; "min": at most this
    tolerance: float = 0.0  # a worsening up to this much (in the guard's units) is not held against it
    why: str = ""  # what gaming it catches, for the verdict and the docs

    def __post_init__(self):
        if self.tolerance < 0:
            raise ValueError(f"guard {self.name!r}: tolerance must be >= 0, not {self.tolerance}")

    def past_bound(self, value: float) -> bool:
        """Whether a candidate's mean `value` is on the wrong side of the bound (never without one)."""
        if self.bound is None:
            return False
        return value < self.bound if self.direction == "max" else value > self.bound


def reported_guard_values(guards, items: list[ItemResult]) -> dict[str, dict[str, float]]:
    """Guard name -> item id -> the value each item reported in its `metrics` (items without one
    are left out: keep-best holds a missing value against the candidate)."""
    return {g.name: {i.item_id: float(i.metrics[g.name]) for i in items if i.metrics and g.name in i.metrics}
            for g in guards}


def guard_values_of(task: "Task", items: list[ItemResult]) -> dict[str, dict[str, float]]:
    """Guard name -> item id -> value for one split's `items`: the task's own `guard_values`, else
    what each item reported (`reported_guard_values`)."""
    if (own := getattr(task, "guard_values", None)) is not None:
        return own(items)
    return reported_guard_values(getattr(task, "guards", ()), items)


class Task(Protocol):
    """A task the loop can improve an agent on. Deterministic: the same folder gives the same
    splits and the same scores."""

    name: str
    root: Path
    description: str  # the task description shown to the Meta- and Feedback-Agents
    # Optional `per_item_calls` (default True): False when the agent's model calls belong to the whole
    # run rather than to one item (it writes one program); the loop then scores feedback in a run of its own.
    # Optional `guards` (default none): the task's `Guard`s, and `guard_values(items)` -> guard name ->
    # item id -> value (default: what each item's `metrics` reported; see `guard_values_of`).

    @property
    def reference_agent(self) -> Path:
        """A working `target_agent.py` that generation 1 starts from."""

    @property
    def agent_env(self) -> list[str]:
        """Names of environment variables passed from SIA's environment to the agent (no secrets)."""

    @property
    def submission(self) -> str:
        """The file the agent writes into its working folder (kept in each generation's logs)."""

    def splits(self, limit: int | None = None) -> dict[str, list[Row]]:
        """Rows of `feedback`, `selection`, `test` (each cut to `limit`) and `pool` (training data
        agents may read; rollouts for fine-tuning come from it). Disjoint, deterministic, and cheap
        to call again (computed once per limit)."""

    def fingerprint(self) -> dict[str, str]:
        """A hash per protected file: a change while an agent runs voids its generation."""

    def write_view(self, dest: Path, predict: dict[str, list[Row]], pool: list[Row], salt: str,
                   prefix: str = "") -> Tags:
        """Write what the agent may read into `dest` (the items of `predict` without their answers,
        and `pool` minus those items); return the tags under which the agent sees each item."""

    def score_output(self, out_dir: Path, tags: Tags, gold: dict[tuple[str, str], str | None], *, sandbox,
                     limits: SandboxLimits, python: str) -> tuple[dict[tuple[str, str], ItemOutcome], str | None]:
        """(outcomes, problem): an `ItemOutcome` for every tagged (split, item id), and what was wrong
        with the agent's output as a whole (None when it could be read). `out_dir` is the agent's
        working folder: untrusted. A task's own evaluator runs in `sandbox`, never in this process.
        Raises `tasks.evaluator.EvaluatorError` only for a fault of the evaluator itself."""


class RewardedTask(Task, Protocol):
    """A task with no answer key for single completions, whose target-model completions can still be
    scored one at a time: the reward path of the weights lever (GRPO, entropic weighting) calls this.
    Classification tasks do not need it: a completion's reward there is its label against the gold."""

    def completion_reward(self, completion: str, item_id: str | None, *, sandbox, limits: SandboxLimits,
                          python: str) -> float:
        """The reward of one completion the target model gave to a prompt the scaffold sent for the
        feedback-split item `item_id` (None: the call named no item; score it on the feedback tier).
        Whatever program the completion contains runs in `sandbox`, never in this process, and only
        on feedback-tier inputs: raise `TaskError` if `item_id` belongs to selection or test. A
        completion that is not a program, crashes, hangs or is wrong gets the task's lowest reward;
        it never raises for that. Higher is better; deterministic for the same completion."""
