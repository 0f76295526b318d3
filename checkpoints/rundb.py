"""The run database (sqlite-utils): generations, item results, model calls, adapters,
rejected gateway requests and flags. Readable with any SQLite tool; API keys never go in here."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import sqlite_utils

from sia.gateway.server import ModelCall


class RunDB:
    """Thread-safe (the gateway records from its own threads) append-mostly store."""

    def __init__(self, path: Path):
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
                "feedback": float, "selection": float, "test": float, "accepted": int, "wall_s": float,
                "note": str, "created": float}, pk=("run_id", "generation"), if_not_exists=True)
            self.db["item_results"].create({
                "run_id": str, "generation": int, "scaffold_sha": str, "adapter": str, "split": str,
                "item_id": str, "tag": str, "prediction": str, "gold": str, "score": float, "error": str},
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

    def save_items(self, rows: list[dict]) -> None:
        with self.lock:
            self.db["item_results"].upsert_all(rows, pk=("run_id", "scaffold_sha", "adapter", "split", "item_id"))

    def cached_items(self, run_id: str, scaffold_sha: str, adapter: str | None, split: str) -> list[dict]:
        with self.lock:
            return list(self.db["item_results"].rows_where(
                "run_id = ? and scaffold_sha = ? and adapter = ? and split = ?",
                [run_id, scaffold_sha, adapter or "base", split]))

    def save_flag(self, row: dict) -> None:
        """A reason not to trust the run (a protected task file changed)."""
        with self.lock:
            self.db["flags"].insert(dict(row, created=time.time()), alter=True)

    def save_generation(self, row: dict) -> None:
        with self.lock:
            self.db["generations"].upsert(dict(row, created=time.time()), pk=("run_id", "generation"), alter=True)

    def generations(self, run_id: str) -> list[dict]:
        with self.lock:
            return list(self.db["generations"].rows_where("run_id = ?", [run_id], order_by="generation"))

    def save_adapter(self, row: dict) -> None:
        with self.lock:
            self.db["adapters"].upsert(dict(row, created=time.time()), pk=("run_id", "version"), alter=True)
