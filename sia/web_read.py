"""What `sia web` reads from a runs folder, without ever writing to it: run.db through RunDB's
read-only readers (`checkpoints.rundb.open_run_db`), every other file with plain reads, each cut to a size a page can
show. Safe while the loop writes the run (WAL sqlite, atomic JSON rewrites, appended JSON lines:
a half-written last line is skipped). Imports no component.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.rundb import RunDB
from sia.files import read_json, read_jsonl

RUN_MARKERS = ("config.json", "run.db", "checkpoints.sqlite")  # what makes a folder a run (as `sia runs`)
TEXT_LIMIT = 200_000  # characters of one file a page shows (a scaffold, a diff)
LOG_LIMIT = 20_000  # characters of one log or trajectory file
LOG_FILES = 40  # log files listed per generation
LOG_PATTERNS = ("*.log", "*_agent_execution.json", "*_sandbox.json")
TRAINING_OVER = ("done", "error")  # progress.jsonl events after which an adapter is no longer training


def list_runs(runs_dir: Path) -> dict[str, RunPaths]:
    """Every run a URL may name, newest first: the runs folder's runs by folder name, and each
    compare's arms as "ARM@COMPARE" (their folders are runs too). Names come from this listing
    only, so a URL can never reach outside the runs folder."""
    runs_dir = Path(runs_dir)
    found = {}
    if runs_dir.is_dir():
        for folder in sorted(runs_dir.iterdir(), key=_mtime, reverse=True):
            if folder.is_dir() and folder.name != "compares" and any((folder / m).exists() for m in RUN_MARKERS):
                found[folder.name] = RunPaths(runs_dir, folder.name)
        for compare in list_compares(runs_dir):
            arms = compare / "arms"
            for folder in sorted(arms.iterdir() if arms.is_dir() else [], key=lambda p: p.name):
                if folder.is_dir() and any((folder / m).exists() for m in RUN_MARKERS):
                    found.setdefault(f"{folder.name}@{compare.name}", RunPaths(arms, folder.name))
    return found


def list_compares(runs_dir: Path) -> list[Path]:
    """RUNS_DIR/compares/ID folders that hold a compare.json, newest first."""
    folder = Path(runs_dir) / "compares"
    return sorted((p for p in folder.iterdir() if (p / "compare.json").is_file()), key=_mtime, reverse=True) \
        if folder.is_dir() else []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# ---- a cheap fingerprint of what a page shows ----

def watched_files(paths: RunPaths) -> list[Path]:
    """The files and folders whose change means a run's pages may show something new: run.db and
    its WAL (generations, items, calls), the loop's progress files, and each generation's and
    adapter's folder (a file written there renames into it, which touches the folder)."""
    root = paths.root
    files = [paths.run_db, root / "run.db-wal", paths.timings, paths.now, paths.paused,
             root / "summary.json", root / "sia.pid", paths.inputs]
    files += sorted(root.glob("gen_*")) + sorted((root / "adapters").glob("gen_*"))
    files += sorted((root / "adapters").glob("gen_*/progress.jsonl"))
    return files


def fingerprint(files: list[Path], *extra: str) -> str:
    """A short hash of the files' sizes and modification times (absent files count too), plus `extra`."""
    digest = hashlib.sha1()
    for path in files:
        try:
            st = path.stat()
            digest.update(f"{path}:{st.st_mtime_ns}:{st.st_size};".encode())
        except OSError:
            digest.update(f"{path}:-;".encode())
    for text in extra:
        digest.update(text.encode())
    return digest.hexdigest()[:16]


# ---- the loop's live files (absent in runs from before they existed) ----

def now_running(paths: RunPaths) -> dict:
    """now.json: {node, generation, started, pid} of the node in flight ({} when absent or unreadable)."""
    return read_json(paths.now)


def paused_reason(paths: RunPaths) -> str | None:
    """Why a budget paused the run (paused.json), None when it is not paused."""
    return paths.paused_reason()


def training_progress(adapter_dir: Path) -> dict | None:
    """The latest training state in an adapter's progress.jsonl: {adapter, event, step, max_steps,
    loss, over} (over: the training ended, done or failed); None without events."""
    events = read_jsonl(adapter_dir / "progress.jsonl")
    if not events:
        return None
    state = {"adapter": f"adapters/{adapter_dir.name}", "step": None, "max_steps": None, "loss": None}
    for event in events:
        for key in ("step", "max_steps", "loss"):
            if event.get(key) is not None:
                state[key] = event[key]
    state["event"] = events[-1].get("event")
    state["over"] = state["event"] in TRAINING_OVER
    return state


def latest_training(paths: RunPaths) -> dict | None:
    """The progress of the adapter trained last (by its progress.jsonl's time), None if none was."""
    logs = sorted((paths.root / "adapters").glob("gen_*/progress.jsonl"), key=_mtime)
    return training_progress(logs[-1].parent) if logs else None


# ---- run.db ----

def rows_of(paths: RunPaths, sql: str, args: list) -> list[dict]:
    """Rows of a query on run.db as dicts ([] without run.db, or before the table exists)."""
    return RunDB.read_rows(paths.run_db, sql, args)


def generation_rows(paths: RunPaths) -> list[dict]:
    """The run's generations table, oldest first."""
    return RunDB.read_generations(paths.run_db, paths.run_id)


def item_splits(paths: RunPaths, scaffold_sha: str, adapter: str | None) -> list[str]:
    """The splits run.db holds items of for one scaffold + adapter."""
    return [r["split"] for r in rows_of(paths, "select distinct split from item_results where run_id = ? and "
                                               "scaffold_sha = ? and adapter = ? order by split",
                                        [paths.run_id, scaffold_sha, adapter or "base"])]


def item_outcomes(paths: RunPaths, scaffold_sha: str, adapter: str | None, split: str) -> list[dict]:
    """Per-item results of one scaffold + adapter on one split: item_id, tag, prediction, gold, score, error."""
    return rows_of(paths, "select item_id, tag, prediction, gold, score, error from item_results where run_id = ? "
                          "and scaffold_sha = ? and adapter = ? and split = ? order by item_id",
                   [paths.run_id, scaffold_sha, adapter or "base", split])


def is_wrong(item: dict) -> bool:
    """Wrong: it failed (an error) or scored less than full marks."""
    return bool(item.get("error")) or item.get("score") is None or float(item["score"]) < 1.0


def model_calls(paths: RunPaths, generation: int, offset: int, limit: int) -> tuple[list[dict], int]:
    """A page of a generation's recorded model calls (oldest first) and how many there are."""
    total = rows_of(paths, "select count(*) as n from model_calls where run_id = ? and generation = ?",
                    [paths.run_id, generation])
    calls = rows_of(paths, "select id, item, purpose, adapter, messages, completion, prompt_tokens, "
                           "completion_tokens, latency_s from model_calls where run_id = ? and generation = ? "
                           "order by id limit ? offset ?", [paths.run_id, generation, limit, offset])
    return calls, (total[0]["n"] if total else 0)


def adapter_rows(paths: RunPaths, version: str) -> list[dict]:
    """The adapters table's row of `version` (a list: empty before it is saved)."""
    return rows_of(paths, "select * from adapters where run_id = ? and version = ?", [paths.run_id, version])


def rewards_by_step(paths: RunPaths, generation: int) -> list[dict]:
    """The rewards table (GRPO/entropic trainings) of one generation as [{step, n, mean}]."""
    return rows_of(paths, "select step, count(*) as n, avg(reward) as mean from rewards where run_id = ? and "
                          "generation = ? group by step order by step", [paths.run_id, generation])


# ---- files ----

def read_text(path: Path, limit: int = TEXT_LIMIT) -> tuple[str, int] | None:
    """(the first `limit` characters, the file's size in bytes); None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit), path.stat().st_size
    except OSError:
        return None


def jsonl_head(path: Path, n: int) -> tuple[list[dict], int]:
    """The first `n` JSON rows of a JSON-lines file and how many lines it has (0 when absent)."""
    rows, count = [], 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                count += 1
                if len(rows) < n:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:  # a line being written
                        pass
    except OSError:
        pass
    return rows, count


def log_files(folder: Path) -> list[Path]:
    """A generation's or adapter's logs and agent trajectories, its own and its smoke tests' (the
    edit search's many candidates under search/ are left out), at most LOG_FILES."""
    found = {p for pattern in LOG_PATTERNS for p in folder.glob(pattern)}
    found |= {p for pattern in LOG_PATTERNS for p in folder.glob(f"*/{pattern}") if p.parent.name != "search"}
    return sorted(found, key=lambda p: (p.parent != folder, str(p)))[:LOG_FILES]
