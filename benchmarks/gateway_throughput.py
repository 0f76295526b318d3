"""Gateway throughput: the same chat requests through the HTTP gateway (8 clients, 1 client) and
through raw batched `Engine.generate`, measured side by side in one run.

    .venv/bin/python benchmarks/gateway_throughput.py [--quick] [--windows 5,15,50] [--rounds 2] [--threads 1]

N short charge-classification chats (half with a JSON-schema enum `response_format`, half plain
text; every case appears once in each form), greedy, `max_tokens` 24, run three ways on one
loaded `Engine`:

  gateway x8  8 client threads posting to /v1/chat/completions with urllib (one fresh Gateway
              per `--windows` value, so the batch window can be compared),
  gateway x1  the same requests posted one after another by a single client,
  raw         `Engine.generate` on consecutive batches of 8 (no HTTP, no batcher).

The gateway's backend is the engine wrapped so that every `generate` call records its batch
size and duration: the mean batch the batcher actually formed, and how much of the wall time was
spent inside `generate` (the rest is HTTP, batch windows and waiting). Tokens/s counts completion tokens.
One warm-up `generate` (grammar compile, first forward) runs before any timing. With
`--rounds` > 1 the modes are run again, in a rotated order each round; the table shows the best
(shortest) and the median wall time of each, which evens out load from other processes on a
shared machine. The HTTP clients are threads of this same process, so they share the CPU (and
the GIL) with the engine, as they would not in a real run where the agent is another process.
On a CPU that other work is also using, `--threads 1` avoids torch's thread oversubscription
(with the default one thread per core, generate ran 5 to 25 times slower there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.table import Table


from sia.gateway.engine import ChatRequest, Completion, Engine
from sia.gateway.server import CallScope, Gateway, MemoryRecorder, parse_chat_request
from sia.precision import PRECISIONS

CHARGES = ["theft", "fraud", "robbery", "assault", "bribery", "arson", "embezzlement", "drug trafficking"]
CASES = [
    "The defendant took a wallet from a customer's bag in a supermarket and left without paying.",
    "The defendant posed as a bank clerk on the phone and persuaded a pensioner to transfer savings.",
    "The defendant threatened a taxi driver with a knife and took the day's fares.",
    "After an argument in a bar the defendant punched the victim, breaking his nose.",
    "The defendant, a county official, accepted cash from a builder in return for a permit.",
    "The defendant poured petrol on a neighbour's shed and set it alight at night.",
    "The defendant, a company cashier, moved client deposits into his own account over a year.",
    "Police found two kilograms of heroin the defendant was carrying across the border for sale.",
    "The defendant broke into a parked car and removed a laptop from the back seat.",
    "The defendant sold fake concert tickets online and disappeared with the buyers' money.",
    "The defendant pushed a woman to the ground in the street and snatched her necklace.",
    "The defendant hit a delivery worker with a bottle, causing a head wound needing stitches.",
    "The defendant paid a tax inspector to ignore missing records at his factory.",
    "The defendant set fire to his own shop to claim insurance, damaging the flats above.",
    "The defendant, a club treasurer, spent membership fees on personal holidays.",
    "The defendant sold methamphetamine to students outside a school on several occasions.",
]
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": CHARGES}},
    "required": ["label"],
    "additionalProperties": False,
}


def make_bodies(n: int, max_tokens: int) -> list[dict]:
    """n OpenAI chat bodies; case i % 16, JSON-constrained on alternate rows so that each case
    appears once constrained and once plain across every 32 rows."""
    bodies = []
    for i in range(n):
        case = CASES[i % len(CASES)]
        constrained = (i + i // len(CASES)) % 2 == 0
        system = "You are a legal assistant. Read the criminal case and name the charge."
        if constrained:
            system += ' Reply with JSON: {"label": "<charge>"}'
        else:
            system += " Answer with the charge only."
        body = {
            "model": "sia-target",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Case: " + case}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if constrained:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "charge", "schema": SCHEMA}}
        bodies.append(body)
    return bodies


class CountingBackend:
    """The engine as a gateway backend, recording the size of every batch it is handed."""

    def __init__(self, engine: Engine):
        self.engine, self.name = engine, engine.name
        self.batch_sizes: list[int] = []
        self.generate_s = 0.0
        self._lock = threading.Lock()

    def generate(self, batch: list[ChatRequest]) -> list[Completion]:
        started = time.perf_counter()
        try:
            return self.engine.generate(batch)
        finally:
            with self._lock:
                self.batch_sizes.append(len(batch))
                self.generate_s += time.perf_counter() - started


@dataclass
class Result:
    mode: str
    wall_s: float
    texts: list[str]
    completion_tokens: int
    batch_sizes: list[int]
    generate_s: float
    latencies: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def rps(self) -> float:
        return self.n / self.wall_s

    @property
    def tps(self) -> float:
        return self.completion_tokens / self.wall_s

    @property
    def mean_batch(self) -> float:
        return statistics.fmean(self.batch_sizes) if self.batch_sizes else float("nan")


def post(url: str, token: str, body: dict) -> tuple[dict, float]:
    req = urllib.request.Request(
        url + "/chat/completions", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=1800) as resp:
        payload = json.loads(resp.read())
    return payload, time.perf_counter() - started


def run_gateway(engine: Engine, bodies: list[dict], clients: int, window_ms: float, max_batch: int) -> Result:
    backend = CountingBackend(engine)
    gw = Gateway(lambda _adapter: backend, MemoryRecorder(), max_batch=max_batch, batch_window_ms=window_ms).start()
    token = gw.issue_token(CallScope(run_id="bench", generation=0, purpose="benchmark"))
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            outs = list(pool.map(lambda b: post(gw.base_url, token, b), bodies))
        wall = time.perf_counter() - started
    finally:
        gw.stop()
    return Result(
        mode=f"gateway x{clients}" + (f" ({window_ms:g} ms)" if clients > 1 else ""),
        wall_s=wall,
        texts=[p["choices"][0]["message"]["content"] for p, _ in outs],
        completion_tokens=sum(p["usage"]["completion_tokens"] for p, _ in outs),
        batch_sizes=backend.batch_sizes,
        generate_s=backend.generate_s,
        latencies=[lat for _, lat in outs],
    )


def run_raw(engine: Engine, bodies: list[dict], batch: int) -> Result:
    requests = [parse_chat_request(b) for b in bodies]  # the gateway's own parsing
    texts, tokens, sizes = [], 0, []
    started = time.perf_counter()
    for i in range(0, len(requests), batch):
        chunk = requests[i : i + batch]
        sizes.append(len(chunk))
        for out in engine.generate(chunk):
            texts.append(out.text)
            tokens += out.completion_tokens
    wall = time.perf_counter() - started
    return Result(f"raw generate (batch {batch})", wall, texts, tokens, sizes, wall)


def best(results: list[Result]) -> Result:
    return min(results, key=lambda r: r.wall_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 requests of max 16 tokens")
    parser.add_argument("-n", "--requests", type=int, help="number of requests (default 32, --quick 16)")
    parser.add_argument("--max-tokens", type=int, help="max_tokens per request (default 24, --quick 16)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (and raw batch size)")
    parser.add_argument("--windows", default="15", help="comma-separated batch_window_ms values for the concurrent run")
    parser.add_argument("--seq-window", type=float, default=15.0, help="batch_window_ms for the 1-client run")
    parser.add_argument("--max-batch", type=int, default=16, help="the gateway's max_batch")
    parser.add_argument("--rounds", type=int, default=1, help="run every mode this many times (best and median shown)")
    parser.add_argument("--skip-sequential", action="store_true", help="leave out the 1-client run")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's own choice, one per core)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="dtype the model is served in, as GatewayConfig.precision (auto: bf16 where native)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.requests or (16 if args.quick else 32)
    max_tokens = args.max_tokens or (16 if args.quick else 24)
    windows = [float(w) for w in args.windows.split(",") if w.strip()]

    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    t0 = time.perf_counter()
    engine = Engine.load("smollm2-135m-instruct", precision=args.precision)
    load_s = time.perf_counter() - t0
    bodies = make_bodies(n, max_tokens)
    t0 = time.perf_counter()
    engine.generate([parse_chat_request(bodies[0]), parse_chat_request(bodies[1])])  # compile grammar, warm up
    warm_s = time.perf_counter() - t0
    console.print(f"model load {load_s:.1f} s, warm-up generate (incl. grammar compile) {warm_s:.1f} s; "
                  f"{n} requests, max_tokens {max_tokens}, {args.clients} clients, rounds {args.rounds}, "
                  f"torch threads {torch.get_num_threads()}, weights {next(engine.model.parameters()).dtype}")

    raw_runs: list[Result] = []
    gw_runs: dict[float, list[Result]] = {w: [] for w in windows}
    seq_runs: list[Result] = []
    modes: list[tuple[str, float | None]] = [("raw", None)] + [("gw", w) for w in windows]
    if not args.skip_sequential:
        modes.append(("seq", args.seq_window))
    for rnd in range(args.rounds):
        shift = rnd % len(modes)  # rotate the order so no mode always runs first or last
        for kind, w in modes[shift:] + modes[:shift]:
            if kind == "raw":
                r = run_raw(engine, bodies, args.clients)
                raw_runs.append(r)
            elif kind == "gw":
                r = run_gateway(engine, bodies, args.clients, w, args.max_batch)
                gw_runs[w].append(r)
            else:
                r = run_gateway(engine, bodies, 1, w, args.max_batch)
                seq_runs.append(r)
            sizes = f", batches {r.batch_sizes}" if kind == "gw" else ""
            console.print(f"[dim]round {rnd + 1}: {r.mode} {r.wall_s:.1f} s{sizes}[/dim]")

    raw = best(raw_runs)
    gws = [best(gw_runs[w]) for w in windows]
    seq = best(seq_runs) if seq_runs else None
    rows = gws + ([seq] if seq else []) + [raw]

    table = Table(title=f"Gateway throughput: {n} requests (half JSON-schema enum), max_tokens {max_tokens}; "
                        f"best of {args.rounds} round(s)")
    for col in ("mode", "wall s", "median wall s", "req/s", "completion tok/s", "mean batch", "mean batch, all rounds",
                "batches", "in generate s", "mean latency s", "same text as raw"):
        table.add_column(col, justify="left" if col == "mode" else "right", no_wrap=col == "mode")
    every = {id(best(runs)): runs for runs in [raw_runs, seq_runs, *gw_runs.values()] if runs}
    for r in rows:
        same = sum(a == b for a, b in zip(r.texts, raw.texts))
        pooled = [size for run in every[id(r)] for size in run.batch_sizes]
        table.add_row(
            r.mode, f"{r.wall_s:.1f}", f"{statistics.median(x.wall_s for x in every[id(r)]):.1f}",
            f"{r.rps:.2f}", f"{r.tps:.1f}", f"{r.mean_batch:.2f}",
            f"{statistics.fmean(pooled):.2f}", str(len(r.batch_sizes)), f"{r.generate_s:.1f}",
            f"{statistics.fmean(r.latencies):.2f}" if r.latencies else "-", f"{same}/{r.n}",
        )
    console.print(table)

    med = lambda runs: statistics.median(r.wall_s for r in runs)  # noqa: E731
    ratios = Table(title="Ratios of req/s (= ratios of wall time; best run and median over rounds)")
    ratios.add_column("gateway run", justify="left", no_wrap=True)
    ratios.add_column(f"x{args.clients} / raw batched: best", justify="right")
    ratios.add_column("median", justify="right")
    ratios.add_column(f"x{args.clients} / sequential: best", justify="right")
    ratios.add_column("median", justify="right")
    for w, g in zip(windows, gws):
        ratios.add_row(
            g.mode, f"{raw.wall_s / g.wall_s:.2f}", f"{med(raw_runs) / med(gw_runs[w]):.2f}",
            f"{seq.wall_s / g.wall_s:.2f}" if seq else "-", f"{med(seq_runs) / med(gw_runs[w]):.2f}" if seq else "-",
        )
    console.print(ratios)

    if args.json:
        print(json.dumps({
            "requests": n, "max_tokens": max_tokens, "load_s": load_s, "warmup_s": warm_s,
            "runs": [{"mode": r.mode, "wall_s": r.wall_s, "rps": r.rps, "tps": r.tps, "mean_batch": r.mean_batch,
                      "generate_s": r.generate_s, "batch_sizes": r.batch_sizes,
                      "batch_sizes_all_rounds": [run.batch_sizes for run in every[id(r)]]} for r in rows],
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
