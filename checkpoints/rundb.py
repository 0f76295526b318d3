"""The run database (sqlite-utils): generations, item results, model calls, adapters,
rejected gateway requests and flags. Readable with any SQLite tool; API keys never go in here."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from sia.records import ItemResult, ModelCall

# The one query for a run's generations: the loop reads them through a RunDB, `sia runs`/`sia show`
# through `RunDB.read_generations` without opening the database for writing.
_GENERATIONS = "select * from generations where run_id = ? order by generation"


def _generation_rows(conn: sqlite3.Connection, run_id: str) -> list[dict]:
    rows = _dict_rows(conn.execute(_GENERATIONS, [run_id]))
    for row in rows:  # tokens per role is stored as JSON text
        if isinstance(row.get("tokens"), str):
            row["tokens"] = json.loads(row["tokens"])
    return rows


def open_run_db(path: Path) -> sqlite3.Connection:
    """A connection to an existing run.db that cannot change anything in the run folder. With the
    WAL files present (a writer has run.db open, or was killed) read-only sees every committed row.
    Without them the whole database is in run.db, and `immutable` reads it as it is: a plain
    read-only connection to a WAL database would create run.db-wal and -shm and, unable to remove
    them, leave them behind. (A killed writer's -shm, SQLite's shared-memory index, may still be
    rebuilt: never run.db or its WAL.)"""
    path = Path(path).resolve()
    live = Path(f"{path}-wal").exists() and Path(f"{path}-shm").exists()
    return sqlite3.connect(f"{path.as_uri()}?mode=ro{'' if live else '&immutable=1'}", uri=True, timeout=10)


def _read(path: Path, query, empty):
    """`query(connection)` on an existing run.db through `open_run_db` (nothing is created or
    written: no run.db, no table, no WAL file); `empty` where there is no run.db, the table is not
    there yet, or the database stays busy past the timeout."""
    path = Path(path)
    if not path.exists():
        return empty
    try:
        conn = open_run_db(path)
    except sqlite3.Error:
        return empty
    try:
        return query(conn)
    except sqlite3.OperationalError:
        return empty
    finally:
        conn.close()


def _dict_rows(cursor) -> list[dict]:
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


class RunDB:
    """Thread-safe (the gateway records from its own threads) append-mostly store."""

    def __init__(self, path: Path):
        # Imported here: sqlite_utils pulls in pandas (about half a second), which `sia runs` and
        # `sia show` only reading generations should not pay.
        import sqlite_utils

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        self.db = sqlite_utils.Database(conn)
        self.lock = threading.Lock()
        self._ensure_tables()

    def _ensure_tables(self) -> None:
        with self.lock:
            self.db["generations"].create({
                "run_id": str, "generation": int, "lever": str, "adapter": str, "scaffold_sha": str,
                "feedback": float, "selection": float, "test": float, "accepted": int, "p_value": float,
                "guards": str, "wall_s": float, "note": str, "created": float}, pk=("run_id", "generation"),
                if_not_exists=True)  # (a run.db from before p_value/guards gets them as columns on first save)
            self.db["item_results"].create({
                "run_id": str, "generation": int, "scaffold_sha": str, "adapter": str, "split": str,
                "item_id": str, "tag": str, "prediction": str, "gold": str, "score": float, "error": str,
                "metrics": str},
                pk=("run_id", "scaffold_sha", "adapter", "split", "item_id"), if_not_exists=True)
            self.db["model_calls"].create({
                "id": int, "run_id": str, "generation": int, "adapter": str, "item": str, "purpose": str,
                "messages": str, "response_format": str, "completion": str, "prompt_tokens": int,
                "completion_tokens": int, "latency_s": float, "created": float}, pk="id", if_not_exists=True)
            self.db["adapters"].create({
                "run_id": str, "version": str, "generation": int, "path": str, "examples": int,
                "train_loss": float, "selection": float, "promoted": int, "backend": str, "created": float},
                pk=("run_id", "version"), if_not_exists=True)
            self.db["rejected_requests"].create({"reason": str, "path": str, "created": float}, if_not_exists=True)
            self.db["model_calls"].create_index(["run_id", "item"], if_not_exists=True)

    # gateway Recorder protocol
    def record_call(self, call: ModelCall) -> None:
        row = {
            "run_id": call.run_id, "generation": call.generation, "adapter": call.adapter_version or "base",
            "item": call.item, "purpose": call.purpose, "messages": json.dumps(call.messages, ensure_ascii=False),
            "response_format": json.dumps(call.response_format, ensure_ascii=False) if call.response_format else None,
            "completion": call.completion, "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens, "latency_s": call.latency_s, "created": call.created,
        }
        with self.lock:
            self.db["model_calls"].insert(row)

    def record_rejected(self, reason: str, path: str) -> None:
        with self.lock:
            self.db["rejected_requests"].insert({"reason": reason, "path": path, "created": time.time()})

    def save_items(self, items: list[ItemResult]) -> None:
        with self.lock:
            rows = [dict(i.row(), metrics=None if i.metrics is None else json.dumps(i.metrics)) for i in items]
            # alter: a run.db from before guard metrics gains the column on its first new items
            self.db["item_results"].upsert_all(rows, pk=("run_id", "scaffold_sha", "adapter", "split", "item_id"),
                                               alter=True)

    def cached_items(self, run_id: str, scaffold_sha: str, adapter: str | None, split: str) -> list[ItemResult]:
        with self.lock:
            return [ItemResult.from_row(r) for r in self.db["item_results"].rows_where(
                "run_id = ? and scaffold_sha = ? and adapter = ? and split = ?",
                [run_id, scaffold_sha, adapter or "base", split])]

    def save_flag(self, row: dict) -> None:
        """A reason not to trust the run (a protected task file changed)."""
        with self.lock:
            self.db["flags"].insert(dict(row, created=time.time()), alter=True)

    def save_generation(self, row: dict) -> None:
        with self.lock:
            self.db["generations"].upsert(dict(row, created=time.time()), pk=("run_id", "generation"), alter=True)

    def generations(self, run_id: str) -> list[dict]:
        with self.lock:
            return _generation_rows(self.db.conn, run_id)

    @staticmethod
    def read_generations(path: Path, run_id: str) -> list[dict]:
        """A run's generations, read without side effects: no run.db is created where none exists
        and no table is added (RunDB() would do both); [] before the first generation is saved."""
        return _read(path, lambda conn: _generation_rows(conn, run_id), [])

    @staticmethod
    def read_item_scores(path: Path, run_id: str, scaffold_sha: str, adapter: str | None, split: str) -> dict[str, float]:
        """Item id -> score of one scaffold + adapter on one split, read as `read_generations` reads
        ({} where there are none): what `sia compare` pairs across arms."""
        query = ("select item_id, score from item_results where run_id = ? and scaffold_sha = ? and adapter = ? "
                 "and split = ?")
        return _read(path, lambda conn: {item: float(score) for item, score in conn.execute(
            query, [run_id, scaffold_sha, adapter or "base", split])}, empty={})

    @staticmethod
    def read_rows(path: Path, sql: str, args: list) -> list[dict]:
        """Any query's rows as dicts, read as `read_generations` reads ([] without run.db or table)."""
        return _read(path, lambda conn: _dict_rows(conn.execute(sql, args)), [])

    @staticmethod
    def read_token_sums(path: Path, run_id: str, since: float | None = None) -> list[tuple[str, int, int]]:
        """(purpose, prompt tokens, completion tokens) summed over the run's recorded model calls made
        after `since` (an epoch time; None: all), read as `read_generations` reads."""
        query = ("select purpose, coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) from "
                 "model_calls where run_id = ?" + (" and created > ?" if since is not None else "") + " group by purpose")
        args = [run_id] + ([since] if since is not None else [])
        return _read(path, lambda conn: [(p, int(a), int(b)) for p, a, b in conn.execute(query, args)], [])

    @staticmethod
    def read_saved_before(path: Path, run_id: str, generation: int) -> float | None:
        """When the last generation before `generation` was saved (None: it is the first)."""
        query = "select max(created) from generations where run_id = ? and generation < ?"
        return _read(path, lambda conn: conn.execute(query, [run_id, generation]).fetchone()[0], None)

    def save_adapter(self, row: dict) -> None:
        with self.lock:
            self.db["adapters"].upsert(dict(row, created=time.time()), pk=("run_id", "version"), alter=True)

    def save_rewards(self, run_id: str, generation: int, rows: list[dict]) -> None:
        """The rewards a GRPO/entropic training handed out (finetune.rewards), one row per
        (prompt, completion); saving the same file again adds nothing."""
        keyed = [{"run_id": run_id, "generation": generation, "prompt_sha": r["prompt_sha"], "item": r.get("item"),
                  "completion": r["completion"], "reward": float(r["reward"]), "step": r.get("step"),
                  "method": r.get("method")} for r in rows]
        with self.lock:
            self.db["rewards"].create({
                "run_id": str, "generation": int, "prompt_sha": str, "item": str, "completion": str,
                "reward": float, "step": int, "method": str}, pk=("run_id", "generation", "prompt_sha", "completion"),
                if_not_exists=True)
            if keyed:
                self.db["rewards"].upsert_all(keyed, pk=("run_id", "generation", "prompt_sha", "completion"))
