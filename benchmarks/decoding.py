"""Greedy decoding in the gateway engine on demo-like constrained prompts (`Engine.decoding`):
`model.generate` decoding every token of the answer, `model.generate` stopping once the grammar
fixes the rest, and the jump-forward decoder (forced text checked in one pass, then the same stop).

    .venv/bin/python benchmarks/decoding.py [--items 48] [--batch 8] [--rounds 2]

A second table runs 8 open-ended prompts (plain text, and a JSON schema with a free string
and an enum) to 128 tokens, where most tokens are choices, so drafts cannot help much: it checks
that jump-forward costs nothing there.

The prompts are the demo's generation-2 scaffold on lawbench-mini's first `--items` feedback,
selection and training cases (the reference agent with retrieved-shots-2 and centroid-labels-2:
two retrieved examples and a two-label ranked shortlist in a JSON-schema enum), served in
batches of `--batch` in float32. All ways run in the same process, alternating, and must give
the same texts; the figures are time ratios against decoding every token.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table


def demo_requests(n_items: int) -> list:
    from sia.gateway.protocol import ChatRequest
    from sia.tasks.registry import resolve_task

    from sia.tasks.classification import load_reference_agent

    agent = load_reference_agent()
    agent.SCAFFOLD.update(retrieved_shots=2, centroid_labels=2)
    splits = resolve_task("lawbench-mini").splits()
    pool, cases = splits["pool"], (splits["feedback"] + splits["selection"] + splits["pool"])[:n_items]
    classes = sorted({r["label"] for r in pool})
    train = [{"id": r["id"], "text": r["text"], "label": r["label"], "grams": agent.bigrams(r["text"][:100])} for r in pool]
    agent.CENTROIDS = agent.fit_centroids(train)
    out = []
    for case in cases:
        view = [r for r in train if r["id"] != case["id"]]
        labels, _ = agent.allowed_labels(case["text"], view, classes)
        schema = {"type": "object", "properties": {"label": {"type": "string", "enum": labels}},
                  "required": ["label"], "additionalProperties": False}
        out.append(ChatRequest(messages=agent.build_messages(case["text"], view, labels), max_tokens=48, json_schema=schema))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="alternating timed runs of each way")
    opts = parser.parse_args()
    from sia.gateway.engine import Engine

    engine = Engine.load("smollm2", precision="fp32")
    forwards = []
    engine.model.register_forward_hook(lambda *args: forwards.append(1))
    console = Console(width=120)
    for title, requests, batch in (
        (f"{opts.items} demo prompts, batches of {opts.batch}", demo_requests(opts.items), opts.batch),
        ("8 open-ended prompts, 128 tokens, one batch", open_ended_requests(), 8),
    ):
        engine.generate(requests[:batch])  # warm-up
        console.print(compare(engine, requests, batch, opts.rounds, forwards, f"{title}, float32, {opts.rounds} round(s)"))


def open_ended_requests() -> list:
    from sia.gateway.protocol import ChatRequest

    schema = {"type": "object", "properties": {"diagnosis": {"type": "string"},
              "lever": {"type": "string", "enum": ["scaffold", "weights", "stop"]}}, "required": ["diagnosis", "lever"]}
    asks = [[{"role": "user", "content": f"Write a short story about a {thing}."}]
            for thing in ("cat", "dog", "ship", "tree", "river", "king", "robot", "bird")]
    return [ChatRequest(messages=m, max_tokens=128, json_schema=schema if i % 2 else None) for i, m in enumerate(asks)]


def compare(engine, requests: list, batch: int, rounds: int, forwards: list, title: str) -> Table:
    ways = {"every-token": "every token", "stop-at-rest": "stop at forced rest", "jump-forward": "jump-forward"}
    seconds, texts, tokens, passes = {w: [] for w in ways}, {}, {}, {}
    for _ in range(rounds):
        for way in ways:
            engine.decoding = way
            forwards.clear()
            start, out = time.perf_counter(), []
            for k in range(0, len(requests), batch):
                out += engine.generate(requests[k:k + batch])
            seconds[way].append(time.perf_counter() - start)
            texts[way], tokens[way], passes[way] = [c.text for c in out], sum(c.completion_tokens for c in out), len(forwards)
    table = Table(title=title)
    for column in ("decoding", "median s", "items/s", "forward passes", "completion tokens", "same texts", "speed-up"):
        table.add_column(column, justify="right")
    base = statistics.median(seconds["every-token"])
    for way, name in ways.items():
        median = statistics.median(seconds[way])
        same = sum(a == b for a, b in zip(texts["every-token"], texts[way]))
        table.add_row(name, f"{median:.2f}", f"{len(requests) / median:.2f}", str(passes[way]), str(tokens[way]),
                      f"{same}/{len(requests)}", f"{base / median:.2f}x")
    return table


if __name__ == "__main__":
    main()
