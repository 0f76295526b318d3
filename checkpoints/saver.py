"""The LangGraph checkpointer: one SQLite file per run, so a run resumes after any crash."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path

import ormsgpack
from langgraph.checkpoint.serde.jsonplus import EXT_PYDANTIC_V2, JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver

STATE_MODULE = "sia.graph.state"
# The state's own pydantic types, allowed back out of checkpoints; nothing else is.
STATE_TYPES = [(STATE_MODULE, name) for name in ("Candidate", "GenerationResult", "SIAState", "SIAInput",
                                                  "ScaffoldRewriteState", "FinetuneState", "SubgraphOutput")]
# Checkpoints written before the `sia.*` package rename name the state's module by its old name.
RENAMED_MODULES = {"graph.state": STATE_MODULE}


def _serializer() -> JsonPlusSerializer:
    """LangGraph's serializer with the allow-list, reading old module names as their new ones."""
    strict = JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)
    default_hook = strict._unpack_ext_hook  # LangGraph's allow-listed hook, for every other ext type
    allowed = set(STATE_TYPES)

    def unpack_ext(code: int, data: bytes):
        if code != EXT_PYDANTIC_V2:
            return default_hook(code, data)
        module, name, kwargs, *_ = ormsgpack.unpackb(data, ext_hook=unpack_ext, option=ormsgpack.OPT_NON_STR_KEYS)
        module = RENAMED_MODULES.get(module, module)
        if (module, name) not in allowed:
            return kwargs  # as LangGraph does for a type off the allow-list: its fields, not the object
        cls = getattr(importlib.import_module(module), name)
        try:
            return cls(**kwargs)
        except Exception:  # a field added since: LangGraph's own fallback
            return cls.model_construct(**kwargs)

    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES, __unpack_ext_hook__=unpack_ext)


def open_saver(path: Path) -> SqliteSaver:
    """A SqliteSaver on `path` (WAL, usable from LangGraph's worker threads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return SqliteSaver(conn, serde=_serializer())
