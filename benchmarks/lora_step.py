"""Seconds per LoRA SFT step, Unsloth vs TRL+PEFT, measured side by side in one run.

    .venv/bin/python benchmarks/lora_step.py [--rounds 2] [--precisions fp32,bf16]
        [--gradient-checkpointing]

Each backend trains in its own `finetune.train_lora` process (so neither one's imports or
patches reach the other) on the same 8 examples of about 100 tokens: one batch of 8 per step,
LoRA r=16 on every linear layer, 1 warm-up step then 5 timed ones. Step times come from the
trainer callback (forward + backward + optimizer), so model loading and the final checkpoint
are not counted. With --rounds > 1 the backends alternate, which evens out load from other
processes on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table


from sia.config import FinetuneConfig
from sia.finetune.trainer import SubprocessTrainer
from sia.precision import PRECISIONS

BACKENDS = ("unsloth", "trl")
TOPICS = ["rivers", "glaciers", "volcanoes", "deserts", "forests", "coral reefs", "tundra", "wetlands"]


def write_batch(path: Path) -> Path:
    """8 prompt/completion rows of roughly 100 tokens each with SmolLM2's chat template."""
    with path.open("w") as handle:
        for topic in TOPICS:
            question = (
                f"Write two short sentences about {topic} for a school report. Mention where {topic} are "
                f"found, why {topic} matter to the animals and people living near them, and one threat."
            )
            answer = (
                f"{topic.capitalize()} are found on every continent and shape the land around them. "
                f"They give food and shelter to many species, but climate change puts {topic} at risk."
            )
            handle.write(json.dumps({"messages": [{"role": "user", "content": question}], "completion": answer}) + "\n")
    return path


def run_backend(backend: str, precision: str, dataset: Path, base: Path, work: Path, args) -> dict:
    config = FinetuneConfig(
        backend=backend, allow_fallback=False, lora_r=16, lora_alpha=32, max_steps=1 + args.steps,
        batch_size=8, grad_accum=1, save_steps=10_000, min_examples=8,
        gradient_checkpointing=args.gradient_checkpointing, precision=precision,
    )
    out = work / f"{backend}-{precision}-{len(list(work.iterdir()))}"
    summary = SubprocessTrainer(timeout_s=args.timeout).train(dataset, base, out, config)
    if summary["backend"] != backend:
        raise SystemExit(f"{backend} run fell back to {summary['backend']}: {summary['fallback_reason']}")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the warm-up step")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per backend")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    parser.add_argument("--precisions", default="fp32",
                        help="comma-separated FinetuneConfig.precision values to run each backend at, e.g. fp32,bf16")
    parser.add_argument("--base", type=Path, help="model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per training run")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    if bad := [p for p in precisions if p not in PRECISIONS]:
        parser.error(f"--precisions: unknown {bad}; use {', '.join(PRECISIONS)}")
    if args.base is None:
        from sia.gateway.model_store import safetensors_dir

        args.base = safetensors_dir()

    console = Console(stderr=False)
    runs = [(backend, precision) for precision in precisions for backend in BACKENDS]
    timed: dict[tuple, list[float]] = {run: [] for run in runs}
    walls: dict[tuple, list[float]] = {run: [] for run in runs}
    tokens = None
    with tempfile.TemporaryDirectory(prefix="lora-step-") as tmp:
        work = Path(tmp)
        dataset = write_batch(work / "batch.jsonl")
        (work / "runs").mkdir()
        for round_no in range(args.rounds):
            for backend, precision in runs if round_no % 2 == 0 else runs[::-1]:
                with console.status(f"round {round_no + 1}/{args.rounds}: training with {backend} ({precision}) ..."):
                    summary = run_backend(backend, precision, dataset, args.base, work / "runs", args)
                timed[backend, precision].extend(summary["step_times_s"][1:])  # first step is the warm-up
                walls[backend, precision].append(summary["wall_s"])
                tokens = summary["tokens"]

    table = Table(title=f"LoRA SFT step: batch 8 x ~{tokens // 8} tokens, r=16, all linear, "
                        f"{args.steps} steps x {args.rounds} round(s)"
                        + (", grad. checkpointing" if args.gradient_checkpointing else ""))
    for column in ("backend", "precision", "mean s/step", "median", "min", "max", "wall s/run"):
        table.add_column(column, justify="left" if column in ("backend", "precision") else "right")
    means = {}
    for run in runs:
        values = timed[run]
        means[run] = statistics.fmean(values)
        table.add_row(
            "unsloth" if run[0] == "unsloth" else "trl+peft", run[1],
            f"{means[run]:.3f}", f"{statistics.median(values):.3f}", f"{min(values):.3f}",
            f"{max(values):.3f}", " / ".join(f"{w:.1f}" for w in walls[run]),
        )
    console.print(table)
    for precision in precisions:
        ratio = means["trl", precision] / means["unsloth", precision]
        console.print(f"{precision}: TRL+PEFT / Unsloth step time: [bold]{ratio:.2f}x[/bold] "
                      f"({'Unsloth faster' if ratio > 1 else 'TRL+PEFT faster' if ratio < 1 else 'equal'})")
    if "fp32" in precisions and "bf16" in precisions:
        for backend in BACKENDS:
            console.print(f"{backend}: fp32 / bf16 step time: [bold]{means[backend, 'fp32'] / means[backend, 'bf16']:.2f}x[/bold]")
    if args.json:
        print(json.dumps({"mean_step_s": {f"{b}/{p}": v for (b, p), v in means.items()}, "tokens_per_step": tokens,
                          "step_times_s": {f"{b}/{p}": v for (b, p), v in timed.items()},
                          "gradient_checkpointing": args.gradient_checkpointing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
