"""Runs `sia compare` (the real CLI and graph) with the test fakes in its own process, so a test
can SIGKILL it.

python -m tests.e2e.compare_driver RUNS [--pause-in ARM] -- COMPARE-ARGS...

Arms get scripted models (tests/unit/test_compare.py's replies: the scaffold-only arm rewrites
its scaffold, the llm arm trains an adapter), fake backends and a FakeTrainer. Every sandbox run
is appended to RUNS/events.log as "sandbox ARM gN"; `--pause-in ARM` writes RUNS/paused and
sleeps in the first sandbox run of that arm's generation 2 (generation 1 is checkpointed by then).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import sia.nodes.services
from sia.cli.main import main as sia_main
from sia.sandbox.runner import SubprocessSandbox
from tests.fakes import fake_services_for
from tests.unit.test_compare import replies_for

WORKDIR = re.compile(r"^sia-(.+)-g(\d+)-[^-]+$")  # evaluation.run_agent's scratch folder: sia-RUN-gN-XXXX


def main() -> int:
    split = sys.argv.index("--")
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path)
    ap.add_argument("--pause-in", metavar="ARM")
    args = ap.parse_args(sys.argv[1:split])
    log = args.runs / "events.log"

    def note(line: str) -> None:
        with open(log, "a") as f:
            f.write(line + "\n")

    class LoggingSandbox(SubprocessSandbox):
        def run(self, argv, workdir, env, limits, readable=(), forward_ports=()):
            match = WORKDIR.match(Path(workdir).parent.name)
            arm, gen = match.groups() if match else ("other", "?")
            note(f"sandbox {arm} g{gen}")
            if arm == args.pause_in and gen == "2":
                (args.runs / "paused").write_text("paused")
                time.sleep(600)
            return super().run(argv, workdir, env, limits, readable, forward_ports)

    sia.nodes.services.services_for = fake_services_for(args.runs.parent, replies_for, sandbox=LoggingSandbox())
    note("start")
    return sia_main(sys.argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main())
