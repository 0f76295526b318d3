"""Run the SIA loop from a Python script: build the graph on the run's checkpointer and stream it,
printing each node's update. `python examples/run_loop.py [RUN_ID] [GENERATIONS] [CHECKPOINTER_URL]`:
checkpoints go to runs/RUN_ID/checkpoints.sqlite, or to the Postgres database of a postgresql://
URL (the URL is kept in the run's config.json, so `sia resume RUN_ID` continues in the same one)."""

import sys

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.saver import open_checkpointer
from sia.config import RunConfig
from sia.files import write_json_atomic
from sia.graph.context import RunContext
from sia.graph.graph import build_graph
from sia.graph.state import SIAInput

run_id = sys.argv[1] if len(sys.argv) > 1 else "example"
config = RunConfig(checkpointer=sys.argv[3] if len(sys.argv) > 3 else None)
paths = RunPaths(config.runs_dir, run_id).create()
write_json_atomic(paths.config, config.model_dump(mode="json"))
inputs = SIAInput(run_id=run_id, task="lawbench-mini", max_generations=int(sys.argv[2]) if len(sys.argv) > 2 else 3,
                  policy="alternate")
thread = {"configurable": {"thread_id": run_id}}
with open_checkpointer(paths, config.checkpointer) as saver:
    graph = build_graph(saver)
    for ns, mode, chunk in graph.stream(inputs, thread, context=RunContext(config=config),
                                       stream_mode=["updates", "custom"], subgraphs=True):
        print(ns, mode, chunk if mode == "custom" else list(chunk), flush=True)
    print(graph.get_state(thread).values["history"])
