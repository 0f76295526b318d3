"""Runs the real graph with the test fakes in its own process, so a test can SIGKILL it.

python -m tests.e2e.crash_driver RUNS TASK RUN_ID [--pause-at task|scaffold] [--resume] [--real-trainer]
                                 [--checkpointer postgresql://…]

Policy `alternate`, 3 generations: 1 meta (reference agent), 2 scaffold (retrieved shots),
3 weights. `--pause-at` writes RUNS/paused and sleeps inside the chosen node (generation 2's
first sandbox run for the task node, told from the edit search's and the smoke run's by the
purpose initial in its item tags; or the Feedback-Agent's edit choice in scaffold_rewrite).
Every sandbox run and LLM call is appended to RUNS/events.log; the final history goes to
RUNS/RUN_ID.final.json. `--checkpointer` keeps the checkpoints in that Postgres database instead
of RUNS/RUN_ID/checkpoints.sqlite.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from sia.checkpoints.paths import RunPaths
from sia.checkpoints.saver import open_checkpointer
from sia.graph.context import RunContext
from sia.graph.graph import build_graph
from sia.graph.state import SIAInput
from sia.sandbox.boxes import sweep
from sia.sandbox.runner import SubprocessSandbox
from tests.fakes import fake_config, fake_services, scripted_llm

FEEDBACK_REPLY = '{"diagnosis": "always the first label", "lever": "scaffold", "edit": "retrieved-shots-2"}'


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path)
    ap.add_argument("task")
    ap.add_argument("run_id")
    ap.add_argument("--pause-at", choices=["task", "scaffold"])
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--real-trainer", action="store_true")
    ap.add_argument("--checkpointer", metavar="URL")
    args = ap.parse_args()
    log = args.runs / "events.log"

    def note(line: str) -> None:
        with open(log, "a") as f:
            f.write(line + "\n")

    def pause() -> None:
        (args.runs / "paused").write_text("paused")
        time.sleep(600)

    def purpose_initial(view: Path) -> str:
        """The purpose's first letter in the item tags (nodes/evaluation.py: `g{gen}{purpose[0]}...`)."""
        first = (view / "test.csv").read_text().splitlines()[1]
        return re.match(r"g\d+(\w)", first).group(1)

    class LoggingSandbox(SubprocessSandbox):
        def run(self, argv, workdir, env, limits, readable=(), forward_ports=()):
            name = Path(workdir).parent.name
            note(f"sandbox {name.split('-')[-2]}")
            note(f"scratch {Path(workdir).parent}")
            if args.pause_at == "task" and "-g2-" in name and purpose_initial(Path(readable[0])) == "t":
                pause()
            return super().run(argv, workdir, env, limits, readable, forward_ports)

    meta = scripted_llm(['{"edit": "none"}'] * 5)
    feedback = scripted_llm([FEEDBACK_REPLY] * 50)
    for role, llm in (("meta", meta), ("feedback", feedback)):
        original = llm.structured

        def structured(system, user, schema, _role=role, _original=original):
            note(f"llm {_role} {schema.__name__}")
            if args.pause_at == "scaffold" and _role == "feedback" and schema.__name__ == "EditChoice":
                pause()
            return _original(system, user, schema)

        llm.structured = structured
    config = fake_config(args.runs.parent, runs_dir=str(args.runs),
                         finetune={"max_steps": 8, "save_steps": 2, "batch_size": 2, "min_examples": 2})
    overrides = {"sandbox": LoggingSandbox()}
    if args.real_trainer:
        from sia.finetune.trainer import SubprocessTrainer

        overrides["trainer"] = SubprocessTrainer()
    svc = fake_services(args.runs.parent, args.run_id, meta, feedback, config=config, **overrides)
    thread = {"configurable": {"thread_id": args.run_id}}
    inputs = None if args.resume else SIAInput(run_id=args.run_id, task=args.task, max_generations=3, policy="alternate")
    note(f"start resume={args.resume}")
    if args.resume:  # as `sia resume` does first (cli/isolation.check_isolation)
        note(f"swept {sweep(RunPaths(config.runs_dir, args.run_id).sandboxes)}")
    with open_checkpointer(RunPaths(config.runs_dir, args.run_id), args.checkpointer) as saver:
        final = build_graph(saver).invoke(inputs, thread, context=RunContext(config=config, services=svc))
    (args.runs / f"{args.run_id}.final.json").write_text(
        json.dumps([h.model_dump() for h in final["history"]], indent=1))


if __name__ == "__main__":
    main()
