"""finish: write the run's summary (summary.md and summary.json) beside its generations."""

from __future__ import annotations

from langgraph.runtime import Runtime

from sia.files import write_json_atomic, write_text_atomic
from sia.graph.context import RunContext
from sia.graph.state import SIAState
from sia.nodes.services import services


def finish(state: SIAState, runtime: Runtime[RunContext]) -> dict:
    svc = services(runtime, state)
    rows = [h.model_dump() for h in state.history]
    first = next((h for h in state.history if h.test is not None), None)
    inc = state.incumbent
    final = next((h for h in state.history if inc and h.generation == inc.generation), None)
    isolation = svc.paths.recorded_isolation()  # None without the CLI: see each *_sandbox.json
    write_json_atomic(svc.paths.root / "summary.json", {
        "run_id": state.run_id, "task": state.task, "policy": state.policy, "generations": rows,
        "incumbent_generation": inc.generation if inc else None, "incumbent_adapter": inc.adapter if inc else None,
        "first_test": first.test if first else None, "final_test": final.test if final else None,
        "flagged": state.flagged, "errors": state.errors, "isolation": isolation})
    lines = ["| gen | lever | adapter | feedback | selection | test | accepted | wall s | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for h in state.history:
        lines.append(f"| {h.generation} | {h.lever} | {h.adapter or 'base'} | {fmt(h.feedback)} | {fmt(h.selection)} | "
                     f"{fmt(h.test)} | {'yes' if h.accepted else 'no'} | {h.wall_s} | {h.note} |")
    flag = f"**FLAGGED: {state.flagged}**\n\n" if state.flagged else ""
    if isolation == "unsafe":
        flag += "**UNSAFE SANDBOX: generated code ran without isolation; these scores are not protected.**\n\n"
    write_text_atomic(svc.paths.root / "summary.md", f"# Run {state.run_id} on {state.task}\n\n{flag}" + "\n".join(lines) + "\n")
    return {}
