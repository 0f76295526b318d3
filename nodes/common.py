"""Small helpers the nodes share: writing a generation's files, the update of a lever that
produced no candidate, the quoting of agent text and the failures text the LLMs read, and
progress events for a streaming caller."""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

from sia.files import write_text_atomic
from sia.graph.context import Services
from sia.graph.state import Candidate, GenerationResult, SIAState
from sia.records import ItemResult


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def emit(event: dict) -> None:
    """Send a progress event to `stream_mode="custom"` listeners, if any."""
    try:
        from langgraph.config import get_stream_writer

        get_stream_writer()(event)
    except Exception:  # outside a streaming run there is no writer
        pass


def write_scaffold(svc: Services, generation: int, code: str, lever: str, rationale: str, adapter: str | None,
                   parent_code: str | None, improvement: str) -> Candidate:
    """Save gen_N/target_agent.py, diff.patch and improvement.md; return the candidate."""
    gen_dir = svc.paths.gen(generation)
    path = gen_dir / "target_agent.py"
    write_text_atomic(path, code)
    if parent_code is not None:
        diff = difflib.unified_diff(parent_code.splitlines(keepends=True), code.splitlines(keepends=True),
                                    "incumbent/target_agent.py", f"gen_{generation}/target_agent.py")
        write_text_atomic(gen_dir / "diff.patch", "".join(diff))
    write_text_atomic(gen_dir / "improvement.md", improvement)
    return Candidate(generation=generation, lever=lever, scaffold_path=str(path), scaffold_sha=sha(code),
                     adapter=adapter, rationale=rationale)


def elapsed(svc: Services, state: SIAState) -> float:
    """Seconds since the current lever (or generation 1) started."""
    now = svc.clock()
    return round(now - (now if state.lever_started is None else state.lever_started), 1)


def lever_failed(svc: Services, state: SIAState, lever: str, adapter: str | None, note: str, error: str) -> dict:
    """The update for a lever that produced no candidate: `pending_result` (with `note`) is what
    the record_failure node records, `error` goes to the run's errors."""
    gen = state.generation + 1
    result = GenerationResult(generation=gen, lever=lever, adapter=adapter, feedback=None, selection=None,
                              test=None, accepted=False, wall_s=elapsed(svc, state), note=note[:300])
    return {"generation": gen, "candidate": None, "pending_result": result,
            "errors": state.errors + [f"gen {gen} {error}"]}


def quoted(text, limit: int) -> str:
    """`text` that came from the agent (a prediction; an error carrying its stderr or what its
    output made the evaluator print) as a Python string literal of at most `limit` of its
    characters: quoted, it reads as data rather than as instructions, and short, it cannot bury
    the prompt. Longer text keeps its start and its end (a traceback's last line says what broke)."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit - limit // 2] + "…" + text[len(text) - limit // 2:]
    return repr(text)


def failures_text(items: list[ItemResult], limit: int = 12) -> str:
    """The worst items first. Predictions and errors come from the agent: cut short and quoted
    (`quoted`), so they cannot steer the prompt. Items without a gold answer here (SIA folders,
    scored as a whole by their own evaluator) show their id and score instead."""
    wrong = sorted((i for i in items if i.score < 1), key=lambda i: i.score)[:limit]
    return "\n".join((f"- item {quoted(i.item_id, 40)}: score {i.score:.3g}" if i.gold is None
                       else f"- {quoted(i.prediction, 60)} -> {i.gold}")
                      + (f" (error: {quoted(i.error, 80)})" if i.error else "") for i in wrong) or "(none)"


def read(path: str | Path) -> str:
    return Path(path).read_text(encoding="utf-8")
