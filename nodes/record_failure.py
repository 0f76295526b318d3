"""record_failure: a lever that produced no candidate (no valid rewrite, too little training
data, a failed training run) still counts as a generation; record why, then back to feedback."""

from __future__ import annotations

from langgraph.runtime import Runtime

from sia.graph.context import RunContext
from sia.graph.state import SIAState
from sia.nodes.budget import with_spend
from sia.nodes.common import emit
from sia.nodes.services import services


def record_failure(state: SIAState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    result = with_spend(state.pending_result, svc.paths.run_db, svc.config, state.run_id)
    svc.db.save_generation({"run_id": state.run_id, **result.model_dump()})
    emit({"event": "scored", **result.model_dump()})
    return {"history": [result], "pending_result": None, "candidate": None}
