"""Sharded against unsharded evaluation (`RunConfig.eval_shards`): the reference agent of a task on
its feedback split, in 1 and in N sandboxed shards, measured side by side in one run, on two
targets:

- embedded: the embedded model on this machine's CPU (the gateway batches the shards' requests
  together; the CPU is the bottleneck, so expect little);
- stand-in engine: a remote target whose server answers each batch after a fixed latency, as a
  GPU server with spare batch capacity does (a second gateway in this process, fed by our
  RemoteBackend), where more requests in flight should pay off most.

    .venv/bin/python benchmarks/sharded_evaluation.py [--task lawbench-mini] [--limit 48]
        [--shards 2] [--latency-ms 200] [--rounds 2] [--skip-embedded]

Each measurement is a fresh run (nothing cached: a new gateway, new greedy cache), timed around
`evaluate` alone (model loading excluded); the rounds alternate the order of 1 and N shards. The
table prints the best wall time of each and the ratio N/1. Item scores are checked equal.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sia.config import RunConfig
from sia.gateway.protocol import Completion
from sia.gateway.server import CallScope, Gateway, MemoryRecorder
from sia.graph.state import Candidate
from sia.nodes.common import sha
from sia.nodes.evaluation import evaluate
from sia.nodes.services import Services, release_services


class LatencyBackend:
    """A batch answered after `latency_s` whatever its size (a server with spare batch capacity):
    the first allowed label of a JSON-schema request."""

    name = "latency-engine"

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    def generate(self, batch):
        time.sleep(self.latency_s)
        out = []
        for req in batch:
            props = (req.json_schema or {}).get("properties") or {}
            key, enum = next(((k, v["enum"]) for k, v in props.items() if v.get("enum")), (None, None))
            text = json.dumps({key: enum[0]}) if enum else "unknown"
            out.append(Completion(text, 100, 8))
        return out


def measure(runs: Path, task: str, limit: int, shards: int, target: dict, tag: str) -> tuple[float, list[float]]:
    config = RunConfig(runs_dir=runs, eval_shards=shards, target=target)
    run_id = f"{tag}-{shards}-{time.monotonic_ns()}"
    svc = Services.build(config, run_id)
    try:
        task_ = svc.task(task)
        code = task_.reference_agent.read_text()
        path = runs / f"{run_id}.py"
        path.write_text(code)
        cand = Candidate(generation=1, lever="meta", scaffold_path=str(path), scaffold_sha=sha(code))
        svc.backend_for(None)  # load the model before the clock starts
        started = time.perf_counter()
        scores = evaluate(svc, task_, cand, ["feedback"], limit=limit)
        return time.perf_counter() - started, [i.score for i in scores["feedback"].items]
    finally:
        if svc._gateway is not None:
            svc._gateway.stop()
        release_services(config, run_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="lawbench-mini")
    ap.add_argument("--limit", type=int, default=48, help="items per split")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--latency-ms", type=float, default=200, help="the stand-in engine's time per batch")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-embedded", action="store_true")
    args = ap.parse_args()
    runs = Path(tempfile.mkdtemp(prefix="sia-bench-shards-"))
    engine = Gateway(lambda adapter: LatencyBackend(args.latency_ms / 1000), MemoryRecorder(), max_batch=64).start()
    key = engine.issue_token(CallScope("bench", 0, None, "serve"), quotas=False)
    import os

    os.environ["SIA_BENCH_ENGINE_KEY"] = key
    targets = {"stand-in engine": {"base_url": engine.base_url, "model": "engine", "api_key_env": "SIA_BENCH_ENGINE_KEY",
                                   "max_concurrency": 64}}
    if not args.skip_embedded:
        targets = {"embedded": {}, **targets}
    table = Table(title=f"{args.task}, {args.limit} feedback items, reference agent: 1 vs {args.shards} shards")
    for col in ("target", "1 shard s", f"{args.shards} shards s", "ratio", "scores equal"):
        table.add_column(col, justify="right" if col != "target" else "left")
    try:
        for name, target in targets.items():
            best: dict[int, float] = {}
            scores: dict[int, list[float]] = {}
            for r in range(args.rounds):
                for n in ((1, args.shards) if r % 2 == 0 else (args.shards, 1)):
                    wall, scores[n] = measure(runs, args.task, args.limit, n, target, name.split()[0])
                    best[n] = min(best.get(n, wall), wall)
            table.add_row(name, f"{best[1]:.2f}", f"{best[args.shards]:.2f}", f"{best[args.shards] / best[1]:.2f}",
                          str(scores[1] == scores[args.shards]))
    finally:
        engine.stop()
        shutil.rmtree(runs, ignore_errors=True)
    Console().print(table)


if __name__ == "__main__":
    main()
