"""What a running loop leaves on disk for a reader that is not the process driving it (`sia web`,
`tail -f`): `now.json`, the node in flight, rewritten as each node starts; one `timings.jsonl`
row per node run, with its wall time. `timed` wraps a node function to do both, unchanged
otherwise (same signature, same update), so the graph files stay plain wiring."""

from __future__ import annotations

import functools
import os
import time

from langgraph.runtime import Runtime

from sia.files import write_json_atomic
from sia.graph.context import RunContext
from sia.graph.state import SIAState
from sia.nodes.evaluation import append_timing
from sia.nodes.services import services


def working_generation(state: SIAState) -> int:
    """The generation a node works toward: the one whose failure it records, the candidate it
    scores, else the next one (the feedback node and a lever choose and build it)."""
    if state.pending_result is not None:
        return state.pending_result.generation
    if state.candidate is not None:
        return state.candidate.generation
    return state.generation + 1


def timed(node):
    """`node`, announcing itself in now.json and timing itself into timings.jsonl (also when it
    raises or pauses the run: the time was spent)."""
    name = node.__name__

    @functools.wraps(node)
    def run(state, runtime: Runtime[RunContext]):
        svc = services(runtime, state)
        generation = state.generation if name == "finish" else working_generation(state)
        started = time.time()
        write_json_atomic(svc.paths.now, {"node": name, "generation": generation, "started": started,
                                                      "pid": os.getpid()})
        try:
            return node(state, runtime)
        finally:
            append_timing(svc, {"generation": generation, "node": name, "wall_s": round(time.time() - started, 3),
                                "started": round(started, 3)})

    return run
