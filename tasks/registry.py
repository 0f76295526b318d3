"""Built-in tasks by name, prepared on first use into the cache (`~/.cache/sia/tasks/NAME`),
tasks prepared or imported there earlier, and task lookup."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.model_store import cache_dir
from tasks.base import Task, TaskError
from tasks.lawbench.prepare import prepare as prepare_lawbench
from tasks.lawbench_mini.prepare import REFERENCE_AGENT as LAWBENCH_MINI_AGENT
from tasks.lawbench_mini.prepare import prepare as prepare_lawbench_mini
from tasks.spaceship_titanic.prepare import prepare as prepare_spaceship_titanic

BUILTIN = {"lawbench-mini": prepare_lawbench_mini, "lawbench": prepare_lawbench,
           "spaceship-titanic": prepare_spaceship_titanic}
# The packaged reference agent of a built-in task, re-copied on use so an upgrade takes effect.
REFERENCE_AGENTS = dict.fromkeys(BUILTIN, LAWBENCH_MINI_AGENT)


def prepare_task(name: str, force: bool = False) -> Path:
    """The built-in task's folder in the cache, prepared (from its PyPI source) when missing."""
    if name not in BUILTIN:
        raise TaskError(f"unknown task '{name}': built-in tasks are {sorted(BUILTIN)}")
    dest = cache_dir() / "tasks" / name
    if force or not (dest / "task.md").exists():
        BUILTIN[name](dest)
    return dest


def resolve_task(name_or_dir: str) -> Task:
    """A task directory, or a built-in task name (prepared into the cache when missing)."""
    path = Path(name_or_dir)
    if path.is_dir():
        return Task.load(path)
    if name_or_dir not in BUILTIN and (cache_dir() / "tasks" / name_or_dir / "task.md").exists():
        return Task.load(cache_dir() / "tasks" / name_or_dir)  # prepared or imported earlier
    if name_or_dir not in BUILTIN:
        raise TaskError(f"unknown task '{name_or_dir}': not a directory, and built-in tasks are {sorted(BUILTIN)}")
    dest = prepare_task(name_or_dir)
    packaged, prepared = REFERENCE_AGENTS[name_or_dir], dest / "reference" / "target_agent.py"
    if not prepared.exists() or prepared.read_bytes() != packaged.read_bytes():
        shutil.copy(packaged, prepared)
    return Task.load(dest)
