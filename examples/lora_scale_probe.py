"""Would more training rows teach the target model to choose between its classifier's two best
labels? A measurement outside any run, on held-out data, before spending loop time on it.

    python examples/lora_scale_probe.py --task lawbench --rows 600 [--epochs 1] [--dev 400] \
        [--out runs/probe-scale-600]
    python examples/logprob_dev_probe.py --task lawbench --adapter runs/probe-scale-600/adapter

The rows are the ones the finetune subgraph builds from recorded calls of the
`classifier-labels-2` scaffold, with the gold answer as the target (`sft_rows`' "gold_target"
rows), but taken straight from the training pool instead of from a rollout, so that their number
is not limited by the loop's time. Dev (the last `--dev` pool items, the same as in
`examples/logprob_dev_probe.py`) is left out. Each row's shortlist comes from a classifier that
did not see the row: the rest of the pool is split in two halves and each half is scored by the
reference agent's classifier (`fit_classifier`) fitted on the other. The rows are the `--rows`
least sure cases whose gold label is in their shortlist, the cases the scaffold sends to the
model. Training is the loop's own `SubprocessTrainer` (`finetune.train_lora`) with the default
`FinetuneConfig` except the epochs.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from sia.config import FinetuneConfig
from sia.finetune.trainer import SubprocessTrainer
from sia.gateway.model_store import safetensors_dir
from sia.tasks.classification import load_reference_agent
from sia.tasks.registry import resolve_task


def cross_fitted_rows(agent, rows: list[dict], shortlist: int) -> list[tuple[float, dict]]:
    """(margin, training row) for each case whose gold label is in the shortlist of a classifier
    fitted on the other half of `rows`."""
    halves = rows[0::2], rows[1::2]
    out = []
    for fit, scored in ((halves[1], halves[0]), (halves[0], halves[1])):
        scores, known = agent.fit_classifier(fit, table=False)
        matrix = scores(scored)
        for row, line in zip(scored, matrix):
            order = np.argsort(-line)[:shortlist]
            labels = [known[j] for j in order]
            if row["label"] not in labels:
                continue
            margin = float(line[order[0]] - line[order[1]])
            out.append((margin, {"messages": agent.build_messages(row["text"], [], labels),
                                 "completion": agent.answer_json(row["label"])}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lawbench")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--dev", type=int, default=400)
    parser.add_argument("--shortlist", type=int, default=2)
    parser.add_argument("--text-chars", type=int, default=150)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pool = resolve_task(args.task).splits()["pool"]
    if not 0 < args.dev < len(pool) or args.rows < 4:
        parser.error(f"need 0 < --dev < {len(pool)} (the training pool's size) and --rows >= 4")
    agent = load_reference_agent()
    agent.SCAFFOLD.update(classifier_labels=args.shortlist, text_chars=args.text_chars)
    candidates = sorted(cross_fitted_rows(agent, pool[:-args.dev], args.shortlist), key=lambda pair: pair[0])
    rows = [row for _, row in candidates[: args.rows]]
    out = args.out or Path("runs") / f"probe-scale-{len(rows)}"
    out.mkdir(parents=True, exist_ok=True)
    dataset = out / "rows.jsonl"
    dataset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} rows (of {len(candidates)} cross-fitted cases with gold in the top {args.shortlist}) "
          f"-> {dataset}; training {args.epochs} epoch(s)", flush=True)
    summary = SubprocessTrainer().train(dataset, safetensors_dir(), out, FinetuneConfig(epochs=args.epochs))
    print(f"adapter {out / 'adapter'}: {summary['steps']} steps, loss {summary['loss_history'][:1]} -> "
          f"{summary['train_loss']}, {summary['wall_s']} s")


if __name__ == "__main__":
    main()
