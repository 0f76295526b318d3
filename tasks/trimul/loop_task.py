"""TriMul as a loop task (`sia run --task trimul`): the agent writes one `custom_kernel` program,
and each item is one (shape, seed) case it is judged on by the sandboxed harness (`harness.check`).

Tiers. *feedback*: the small public shapes (`harness.TEST_SHAPES`) with public seeds 0 and 1; the
agent may read these cases and the Feedback-Agent sees their per-item results. *selection* and
*test*: the benchmark shapes (`harness.BENCHMARK_SHAPES`) with seeds drawn once, when the task
folder is prepared, into `private/seeds.json` (0600 in a 0700 folder of SIA's cache): never in
the package, the view or an item id, so no agent can read them. Without CUDA the benchmark shapes
are scaled down (N divided by `cpu_n_divisor`) so that Triton's interpreter finishes.

Score of a case: 0 when incorrect (wrong, crashed, timed out, or wrong on a timed call); when
correct, its speed-up over the PyTorch reference on the same case (median seconds per call of the
reference divided by the solution's, both measured in the solution's sandboxed child), capped at
`speedup_cap`. Without CUDA that time is a **CPU proxy** (wall clock, one thread, Triton
interpreted), never a GPU time. The solution is never imported in this process.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sia.files import make_private_dir, private_scratch, replacing_dir, write_private_text
from sia.sandbox.files import UnsafeOutput, read_child_file
from sia.tasks.base import ItemOutcome, Row, Tags, TaskError
from sia.tasks.trimul import harness

HERE = Path(__file__).resolve().parent
REFERENCE_AGENT = HERE / "reference_agent.py"
SUBMISSION = "solution.py"
FEEDBACK_SEEDS = (0, 1)
MAX_PROGRAM_BYTES = 1_000_000


class TriMulSpec(BaseModel):
    """`sia_task.json` of a prepared TriMul folder (kind "trimul")."""

    model_config = ConfigDict(extra="forbid")

    name: str = "trimul"
    kind: Literal["trimul"] = "trimul"
    selection_seeds_per_shape: int = Field(2, ge=1, description="Hidden seeds per benchmark shape in selection.")
    test_seeds_per_shape: int = Field(3, ge=1, description="Hidden seeds per benchmark shape in the private test.")
    speedup_cap: float = Field(10.0, gt=1, description="Most a correct case scores: bounds what timing noise, or a "
                                                       "solution forging its own time, can earn.")
    cpu_n_divisor: int = Field(32, ge=1, description="Without CUDA, the benchmark shapes' N is divided by this "
                                                     "(1024 -> 32): Triton's interpreter takes seconds per call there.")
    cpu_timing: tuple[int, int] = Field((1, 3), description="(warm-up, repeats) per case on CPU.")
    cuda_timing: tuple[int, int] = Field((3, 10), description="(warm-up, repeats) per case on CUDA.")
    case_timeout_s: float = Field(60, gt=0, description="Wall-clock seconds per case a solution's child gets "
                                                        "(plus 120 s to start).")


def is_trimul_folder(root: Path) -> bool:
    meta = Path(root) / "sia_task.json"
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("kind") == "trimul"
    except (OSError, ValueError, AttributeError):
        return False


def prepare(dest: Path) -> Path:
    """A TriMul task folder: `sia_task.json` and `private/seeds.json` (the hidden seeds, drawn now)."""
    spec = TriMulSpec()
    with replacing_dir(dest) as tmp:
        (tmp / "sia_task.json").write_text(spec.model_dump_json(indent=1))
        private = make_private_dir(tmp / "private")
        draws = iter(sorted(set(secrets.randbelow(2**31 - 2) + 2 for _ in range(1000))))  # never 0, 1
        n = len(harness.BENCHMARK_SHAPES)
        seeds = {tier: [[next(draws) for _ in range(per)] for _ in range(n)]
                 for tier, per in (("selection", spec.selection_seeds_per_shape), ("test", spec.test_seeds_per_shape))}
        write_private_text(private / "seeds.json", json.dumps(seeds))
    return dest


def shape_slug(shape: dict) -> str:
    return (f"n{shape['N']}-b{shape['B']}-c{shape['C']}-{shape['distribution']}"
            + ("-masked" if shape["masked"] else ""))


def extract_program(text: str) -> str | None:
    """The Python program in a completion: the last fenced block defining custom_kernel, else the
    whole text if it does; None when there is none."""
    blocks = re.findall(r"```(?:python|py)?[ \t]*\n(.*?)```", text or "", flags=re.S)
    found = [b for b in blocks if "def custom_kernel" in b]
    if found:
        return found[-1]
    return text if text and "def custom_kernel" in text and "```" not in text else None


class TriMulTask:
    """The `tasks.base.RewardedTask` protocol for TriMul (see the module docstring)."""

    per_item_calls = False  # the agent's calls write one program for the run (see nodes/task.py)

    def __init__(self, root: Path, spec: TriMulSpec, seeds: dict[str, list[list[int]]]):
        self.root, self.spec, self.name = root, spec, spec.name
        self.classes: list[str] = []  # no labels: a program is scored, not an answer
        self.device = harness.default_device()
        self._cases = self._draw_cases(seeds)  # item id -> (split, case with its seed): never shown
        self._rewards: dict[tuple[str, str | None], float] = {}
        note = (f"Times are CUDA-event times on this machine's GPU (warm-up {spec.cuda_timing[0]}, "
                f"{spec.cuda_timing[1]} timed calls)." if self.device == "cuda" else
                "**This machine has no CUDA device, so every time here is a CPU proxy, not a GPU time:** "
                "the wall clock of one call on one CPU thread, with Triton kernels run by Triton's interpreter "
                "(`TRITON_INTERPRET=1`, NumPy on CPU tensors), on the benchmark shapes with N divided by "
                f"{spec.cpu_n_divisor}. It ranks solutions unlike a GPU would (interpreted Triton is far slower "
                "than PyTorch here), and your program must run on CPU tensors.")
        self.description = (HERE / "task.md").read_text(encoding="utf-8").replace("{timing_note}", note)

    @classmethod
    def load(cls, root: Path) -> "TriMulTask":
        root = Path(root)
        try:
            spec = TriMulSpec.model_validate_json((root / "sia_task.json").read_text())
            seeds = json.loads((root / "private" / "seeds.json").read_text())
            n = len(harness.BENCHMARK_SHAPES)
            if any(len(seeds[t]) != n for t in ("selection", "test")):
                raise ValueError(f"expected {n} seed lists per tier")
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            raise TaskError(f"{root}: not a usable TriMul task folder ({exc}); delete it and `sia run --task trimul` "
                            "prepares a new one") from None
        return cls(root, spec, seeds)

    def _draw_cases(self, seeds: dict) -> dict[str, tuple[str, dict]]:
        cases = {f"fb-{shape_slug(s)}-s{seed}": ("feedback", dict(s, seed=seed))
                 for s in harness.TEST_SHAPES for seed in FEEDBACK_SEEDS}
        for tier, prefix in (("selection", "sel"), ("test", "test")):
            for i, shape in enumerate(self.scored_shapes()):
                for j, seed in enumerate(seeds[tier][i][: getattr(self.spec, f"{tier}_seeds_per_shape")]):
                    cases[f"{prefix}-{shape_slug(shape)}-{j}"] = (tier, dict(shape, seed=int(seed)))
        return cases

    def scored_shapes(self) -> list[dict]:
        """The benchmark shapes as this machine runs them (N scaled down without CUDA)."""
        if self.device == "cuda":
            return [dict(s) for s in harness.BENCHMARK_SHAPES]
        return [dict(s, N=max(8, s["N"] // self.spec.cpu_n_divisor)) for s in harness.BENCHMARK_SHAPES]

    @property
    def reference_agent(self) -> Path:
        return REFERENCE_AGENT

    @property
    def agent_env(self) -> list[str]:
        return []

    @property
    def submission(self) -> str:
        return SUBMISSION

    def fingerprint(self) -> dict[str, str]:
        files = [self.root / "sia_task.json", self.root / "private" / "seeds.json"]
        return {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.exists()}

    def splits(self, limit: int | None = None) -> dict[str, list[Row]]:
        """Rows {id, text, label: None} per tier (in item-id order, cut to `limit`); no pool."""
        out: dict[str, list[Row]] = {"feedback": [], "selection": [], "test": [], "pool": []}
        for item_id, (tier, case) in self._cases.items():
            text = shape_slug(case) + (f" seed {case['seed']}" if tier == "feedback" else "")
            out[tier].append({"id": item_id, "text": text, "label": None})
        return {name: rows[:limit] if limit and name != "pool" else rows for name, rows in out.items()}

    def write_view(self, dest: Path, predict: dict[str, list[Row]], pool: list[Row], salt: str,
                   prefix: str = "") -> Tags:
        """The description, the reference, the public feedback cases, the scored shapes (no seeds)
        and the opaque tags of the items at hand: nothing names a tier or a hidden seed."""
        dest.mkdir(parents=True, exist_ok=True)
        items = [(split, row["id"]) for split, rows in predict.items() for row in rows]
        tagged = sorted(items, key=lambda si: hashlib.sha256(f"{salt}:{si[0]}:{si[1]}".encode()).hexdigest())
        tags = {f"{prefix}q{i:05d}": key for i, key in enumerate(tagged)}
        feedback = [{"id": i, **case} for i, (tier, case) in self._cases.items() if tier == "feedback"]
        files = {"task.md": self.description, "reference.py": (HERE / "reference.py").read_text(),
                 "pytorch_reference.py": (HERE / "solutions" / "pytorch_reference.py").read_text(),
                 "feedback_cases.json": json.dumps(feedback, indent=1),
                 "scored_shapes.json": json.dumps(self.scored_shapes(), indent=1),
                 "items.json": json.dumps(list(tags))}
        for name, text in files.items():
            (dest / name).write_text(text, encoding="utf-8")
        return tags

    def score_output(self, out_dir: Path, tags: Tags, gold: dict[tuple[str, str], str | None], *, sandbox,
                     limits, python: str) -> tuple[dict[tuple[str, str], ItemOutcome], str | None]:
        """The agent's solution.py judged on each tagged case, one sandboxed child per tier."""
        try:
            program = read_child_file(out_dir, SUBMISSION, max_bytes=MAX_PROGRAM_BYTES)
            problem = None if program is not None else f"the agent wrote no {SUBMISSION} in its working directory"
        except UnsafeOutput as exc:
            program, problem = None, str(exc)
        if problem is not None:
            return {key: ItemOutcome(None, 0.0, problem) for key in tags.values()}, problem
        outcomes = {}
        for split in sorted({s for s, _ in tags.values()}):
            ids = [i for s, i in tags.values() if s == split]
            for item_id, outcome in self.run_cases(program, ids, sandbox=sandbox, limits=limits, python=python).items():
                outcomes[(split, item_id)] = outcome
        return outcomes, None

    def run_cases(self, program: bytes, item_ids: list[str], *, sandbox, limits, python: str) -> dict[str, ItemOutcome]:
        """Each item's outcome: `program` run on its case in the harness's sandboxed child."""
        timing = self.spec.cuda_timing if self.device == "cuda" else self.spec.cpu_timing
        cases = [self._cases[i][1] for i in item_ids]
        with private_scratch("trimul_task_") as scratch:
            path = scratch / SUBMISSION
            path.write_bytes(program)
            result = harness.check(path, device=self.device, timeout=120 + self.spec.case_timeout_s * len(cases),
                                   cases=cases, timing=tuple(timing), sandbox=sandbox, python=python,
                                   allow_unsafe=bool(getattr(limits, "allow_unsafe", False)))
        if not result["cases"]:  # the program did not import: every case fails with that reason
            return {i: ItemOutcome("incorrect", 0.0, result["reason"]) for i in item_ids}
        return {i: self._outcome(c) for i, c in zip(item_ids, result["cases"])}

    def _outcome(self, case: dict) -> ItemOutcome:
        if not case["ok"]:
            return ItemOutcome("incorrect", 0.0, case["reason"])
        if "timing_error" in case:
            return ItemOutcome("correct once, not on its timed calls", 0.0, case["timing_error"])
        speedup = case["ref_s"] / case["sol_s"]
        clock = "CUDA events" if self.device == "cuda" else "CPU proxy, not a GPU time"
        return ItemOutcome(f"correct; {speedup:.3g}x the reference ({case['sol_s'] * 1e3:.3f} ms vs "
                           f"{case['ref_s'] * 1e3:.3f} ms, {clock})", min(speedup, self.spec.speedup_cap))

    def completion_reward(self, completion: str, item_id: str | None, *, sandbox, limits, python: str) -> float:
        """The program in `completion` scored on feedback item `item_id` (None: the mean over the
        feedback tier); 0 when there is no program or it fails. Remembered per program and item,
        so the same completion gets the same reward from this task object (times vary between runs)."""
        if item_id is not None and item_id not in self._cases:
            raise TaskError(f"unknown TriMul item {item_id!r}")
        if item_id is not None and self._cases[item_id][0] != "feedback":
            raise TaskError(f"item {item_id!r} is not a feedback item: a completion is never run on selection "
                            "or test cases")
        program = extract_program(completion)
        if program is None:
            return 0.0
        key = (hashlib.sha256(program.encode()).hexdigest(), item_id)
        if key not in self._rewards:
            ids = [item_id] if item_id else [i for i, (t, _) in self._cases.items() if t == "feedback"]
            outcomes = self.run_cases(program.encode(), ids, sandbox=sandbox, limits=limits, python=python)
            self._rewards[key] = sum(o.score for o in outcomes.values()) / len(ids)
        return self._rewards[key]
