"""Remote target concurrency: one batch of chat requests through `RemoteBackend.generate` at
several `max_concurrency` values, against a stand-in endpoint with a fixed latency, measured side
by side in one run.

    .venv/bin/python benchmarks/remote_concurrency.py [--latency-ms 50] [--requests 32]
                                                      [--concurrency 1,2,8,32] [--rounds 3]

The stand-in (tests/openai_standin.py, the remote backend tests' own) is an OpenAI-compatible
`/v1/chat/completions` on 127.0.0.1 (stdlib ThreadingHTTPServer, keep-alive, one thread per
connection) that sleeps `--latency-ms` and then answers; it counts the requests it holds at once. Each concurrency level has its own backend,
warmed by one untimed batch (which opens its pooled connections), so the timed batches measure
steady state. Every round times every level, in a rotated order, and the table shows the best
and the median wall time and the ratio of the best to concurrency 1's. The ideal wall time is
ceil(requests / concurrency) x latency; the gap is HTTP and thread overhead on this machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sia.gateway.protocol import ChatRequest
from sia.gateway.remote import RemoteBackend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ holds the stand-in
from tests.openai_standin import StandIn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the stand-in's latency per request")
    parser.add_argument("--requests", type=int, default=32, help="requests in the batch")
    parser.add_argument("--concurrency", default="1,2,8,32", help="max_concurrency values, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="timed batches per level (rotated order)")
    args = parser.parse_args()
    levels = [int(value) for value in args.concurrency.split(",")]
    latency_s = args.latency_ms / 1000
    batch = [ChatRequest([{"role": "user", "content": f"case {i}"}], max_tokens=8) for i in range(args.requests)]

    standin = StandIn()
    standin.latency_s = latency_s
    backends = {level: RemoteBackend(standin.base_url, "stand-in", max_concurrency=level, max_retries=0)
                for level in levels}
    times: dict[int, list[float]] = {level: [] for level in levels}
    in_flight: dict[int, int] = {}
    try:
        for level in levels:  # warm-up: opens each pool's connections
            backends[level].generate(batch)
        for round_ in range(args.rounds):
            for level in levels[round_ % len(levels):] + levels[:round_ % len(levels)]:
                standin.reset()
                started = time.perf_counter()
                outs = backends[level].generate(batch)
                times[level].append(time.perf_counter() - started)
                assert len(outs) == len(batch) and all(out.text == f"echo: case {i}" for i, out in enumerate(outs))
                in_flight[level] = max(in_flight.get(level, 0), standin.max_in_flight)
    finally:
        for backend in backends.values():
            backend.close()
        standin.stop()

    base = min(times[levels[0]])
    table = Table(title=f"RemoteBackend: a batch of {args.requests} at {args.latency_ms:g} ms latency "
                        f"(best and median of {args.rounds})")
    for column in ("concurrency", "ideal s", "best s", "median s", f"best / c={levels[0]}",
                   "speed-up", "max in flight"):
        table.add_column(column, justify="right")
    for level in levels:
        best = min(times[level])
        table.add_row(str(level), f"{math.ceil(args.requests / level) * latency_s:.3f}", f"{best:.3f}",
                      f"{statistics.median(times[level]):.3f}", f"{best / base:.3f}", f"{base / best:.1f}x",
                      str(in_flight[level]))
    console = Console()
    console.width = max(console.width, 100)  # a pipe gets 80 columns, which cut the headers
    console.print(table)


if __name__ == "__main__":
    main()
