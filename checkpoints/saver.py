"""The LangGraph checkpointer: one SQLite file per run, so a run resumes after any crash."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

# The state's own pydantic types, allowed back out of checkpoints; nothing else is.
STATE_TYPES = [("graph.state", name) for name in ("Candidate", "GenerationResult", "SIAState", "SIAInput",
                                                   "ScaffoldRewriteState", "FinetuneState", "SubgraphOutput")]


def open_saver(path: Path) -> SqliteSaver:
    """A SqliteSaver on `path` (WAL, usable from LangGraph's worker threads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(conn, serde=JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES))
