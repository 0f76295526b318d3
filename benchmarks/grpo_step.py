"""Seconds per GRPO (and entropic) step against an SFT step on the same prompts, side by side.

    .venv/bin/python benchmarks/grpo_step.py [--steps 4] [--rounds 1] [--max-completion 32] \
        [--backends trl,unsloth] [--base MODEL_DIR] [--json results.json]

Eight charge-classification prompts (a case and the allowed charges, answered as JSON
`{"label": ...}`), each with its gold charge. SFT trains on prompt + gold answer, 8 rows per step.
GRPO and entropic sample `--generations` completions per prompt (8 completions per step, so
8 / generations prompts), score each with the label reward (`finetune.rewards`), and train on the
group advantages; their step includes the sampling, which SFT does not need. Each method runs in
its own `finetune.train_lora` process (fp32, LoRA r=16 on every linear layer; `--backends` TRL +
PEFT by default, `unsloth` too on a GPU, where Unsloth's GRPO path runs; a run that falls back to
the other backend is reported as failed instead of being timed under the wrong name, a failed run
does not stop the others, and the table names the trainer class that ran); the first step is a
warm-up and is not counted.
With --rounds > 1 the runs alternate.
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
from sia.finetune.trainer import SubprocessTrainer, TrainingFailed

CHARGES = ["盗窃", "诈骗", "故意伤害", "抢劫", "交通肇事", "危险驾驶", "贩卖毒品", "寻衅滋事"]
FORMAT = {"type": "json_schema", "json_schema": {"name": "charge", "schema": {
    "type": "object", "properties": {"label": {"type": "string", "enum": CHARGES}}, "required": ["label"]}}}
CASES = ["被告人趁被害人不备，窃取其手机一部，价值人民币三千元。", "被告人虚构投资项目，骗取被害人人民币五万元。",
         "被告人因琐事与被害人发生争执，持木棍将其打成轻伤。", "被告人持刀威胁被害人，劫取现金二千元。",
         "被告人驾驶货车违章超车，致一人死亡，负事故全部责任。", "被告人醉酒后驾驶机动车，血液酒精含量为每百毫升一百五十毫克。",
         "被告人向他人出售甲基苯丙胺二克，获利四百元。", "被告人在酒吧内无故殴打他人，随意损毁财物。"]


def write_rows(folder: Path) -> tuple[Path, Path]:
    """The same 8 prompts as an SFT dataset (with the gold answer) and a reward dataset."""
    sft, rewards = folder / "sft.jsonl", folder / "rewards.jsonl"
    system = "你是法律助手。从下列罪名中选择一个：" + "、".join(CHARGES) + '。只回答 JSON {"label": "罪名"}。'
    with sft.open("w") as a, rewards.open("w") as b:
        for i, (case, gold) in enumerate(zip(CASES, CHARGES)):
            messages = [{"role": "system", "content": system}, {"role": "user", "content": case}]
            a.write(json.dumps({"messages": messages, "completion": json.dumps({"label": gold}, ensure_ascii=False)},
                               ensure_ascii=False) + "\n")
            spec = {"kind": "label", "gold": gold, "response_format": FORMAT}
            b.write(json.dumps({"messages": messages, "item": f"case-{i}", "reward_spec": json.dumps(spec)},
                               ensure_ascii=False) + "\n")
    return sft, rewards


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps after the warm-up step")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per method")
    parser.add_argument("--generations", type=int, default=4, help="GRPO completions per prompt")
    parser.add_argument("--max-completion", type=int, default=32, help="GRPO token limit per completion")
    parser.add_argument("--methods", default="sft,grpo,entropic")
    parser.add_argument("--base", type=Path, help="model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--backends", default="trl", help="comma-separated: trl, unsloth (GRPO on a GPU only)")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--json", type=Path, help="also write every step time and reward to this file")
    args = parser.parse_args()
    if args.base is None:
        from sia.gateway.model_store import safetensors_dir

        args.base = safetensors_dir()
    runs = [(m, b) for b in args.backends.split(",") for m in args.methods.split(",")]
    steps: dict[tuple, list[float]] = {r: [] for r in runs}
    rewards: dict[tuple, list[float]] = {r: [] for r in runs}
    trainers: dict[tuple, list[str]] = {}
    failed: dict[tuple, str] = {}

    def save() -> None:  # after every run: a later one that hangs or fails loses nothing measured
        if args.json:
            args.json.write_text(json.dumps([{"method": m, "backend": b, "step_s": steps[m, b], "rewards": rewards[m, b],
                                              "trainer_classes": trainers.get((m, b)), "failed": failed.get((m, b))}
                                             for m, b in runs], indent=1, ensure_ascii=False))

    with tempfile.TemporaryDirectory(prefix="grpo_step_") as tmp:
        work = Path(tmp)
        sft, reward_rows = write_rows(work)
        for round_ in range(args.rounds):
            for method, backend in runs if round_ % 2 == 0 else runs[::-1]:
                config = FinetuneConfig(method=method, backend=backend, allow_fallback=False, precision="fp32",
                                        max_steps=1 + args.steps, batch_size=8, save_steps=10_000, min_examples=8,
                                        learning_rate=2e-4, num_generations=args.generations,
                                        max_completion_length=args.max_completion)
                out = work / f"{method}-{backend}-{round_}"
                try:
                    summary = SubprocessTrainer(timeout_s=args.timeout).train(
                        sft if method == "sft" else reward_rows, args.base, out, config)
                    trainers[method, backend] = summary.get("trainer_classes")
                    why = None if summary["backend"] == backend else (  # e.g. Unsloth's GRPO path on a CPU
                        f"asked for {backend}, trained with {summary['backend']} ({summary.get('fallback_reason')})")
                except TrainingFailed as error:
                    why = str(error)[-1500:]
                if why:
                    failed[method, backend] = why
                    print(f"{method} {backend} round {round_ + 1} FAILED: {why}", file=sys.stderr)
                    save()
                    continue
                steps[method, backend] += summary["step_times_s"][1:]
                rewards[method, backend] += summary.get("reward_history") or []
                print(f"{method} {backend} round {round_ + 1}: {summary['step_times_s']}", file=sys.stderr)
                save()
    table = Table(title=f"Seconds per step, 8 sequences per step, {args.steps} timed steps x {args.rounds} round(s)")
    for column in ("method", "backend", "trainer class", "prompts / step", "median s / step", "s / prompt",
                   "vs SFT step", "mean sampled reward"):
        table.add_column(column)
    for method, backend in runs:
        # The first class that is not our own wrapper: TRL's, or the one Unsloth put in its place.
        trainer = next((c for c in trainers.get((method, backend)) or [] if not c.startswith(("sia.", "__main__."))), "")
        trainer = ".".join(trainer.replace(".<locals>", "").split(".")[-2:])  # e.g. sft_trainer.SFTTrainer
        if not steps[method, backend]:
            table.add_row(method, backend, trainer, "", "failed" if (method, backend) in failed else "no step",
                          "", "", "")
            continue
        median = statistics.median(steps[method, backend])
        sft_steps = steps.get(("sft", backend))
        prompts = 8 if method == "sft" else 8 // args.generations
        table.add_row(method, backend, trainer, str(prompts), f"{median:.2f}", f"{median / prompts:.2f}",
                      f"{median / statistics.median(sft_steps):.1f}x" if sft_steps else "",
                      f"{statistics.mean(rewards[method, backend]):.3f}" if rewards[method, backend] else "")
    Console(width=140).print(table)
    save()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
