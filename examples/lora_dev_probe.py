"""Does the weights lever help a scaffold? Measured on a held-out slice of the training pool.

    python examples/lora_dev_probe.py --edits retrieved-shots-2,centroid-labels-2,list-labels \
        --variant '{"learning_rate": 1e-3, "epochs": 2}' [--variant ...] [--rollout 48] [--dev 60]

The scaffold is the task's reference agent with library edits applied. It runs on the feedback
split and on `--rollout` training-pool items, so the gateway records those calls; each variant
trains a LoRA adapter on the rows the finetune subgraph would build from them (`sft_rows`; with
`"method": "grpo"` or `"entropic"` in the variant, the recorded prompts, `reward_rows`), and
base and adapters are scored on "dev": the last `--dev` items of the training pool, which are
never feedback, selection, test or rollout items. Dev is scored `--dev-chunk` items at a time:
an agent's view of the training data is the pool minus the items it predicts, so scoring 150
dev items at once would leave a scaffold's retrieval and classifier 150 fewer training cases
than they have on the selection split (for lawbench-mini's centroid shortlist: its first label
is right for 85% of dev items scored at once, 93% in chunks of 15). Use it to choose fine-tuning
settings without looking at the selection split (which alone decides promotion in a run). Output goes to
runs/RUN (default: a new `probe-<time>`); a second call with the same --run-id and --edits
reuses the recorded rollouts (rows come only from the probed scaffold's calls).
"""

import argparse
import json
import time

from rich.console import Console
from rich.table import Table


from sia.config import FinetuneConfig
from sia.config import RunConfig
from sia.finetune.records import resolve_method, reward_rows, sft_rows
from sia.graph.state import Candidate
from sia.nodes.common import sha
from sia.nodes.evaluation import evaluate
from sia.nodes.keep_best import item_scores
from sia.nodes.services import Services
from sia.records import ItemResult
from sia.tasks.classification.edits import LIBRARY, apply_edit
from sia.tasks.registry import resolve_task


def wins_losses(candidate: list[ItemResult], base: list[ItemResult]) -> dict:
    """Shares of items only the candidate gets right (wins) and only the base gets right (losses):
    the inputs `examples/selection_power.py` needs to size a selection split."""
    base_score = item_scores(base)
    diffs = [score - base_score[item] for item, score in item_scores(candidate).items()]
    return {"wins": sum(d > 0 for d in diffs) / len(diffs), "losses": sum(d < 0 for d in diffs) / len(diffs)}


def score_dev(svc, task, candidate, dev: list[dict], chunk: int):
    """`candidate` on the dev items, `chunk` at a time; (accuracy, per-item results)."""
    items = []
    for start in range(0, len(dev), chunk):
        items += evaluate(svc, task, candidate, ["dev"], rows_override={"dev": dev[start:start + chunk]})["dev"].items
    return sum(i.score for i in items) / len(items), items


def probe(svc, task, edits: list[str], variants: list[dict], dev_items: int, dev_chunk: int = 15,
          report=lambda result: None) -> tuple[list[dict], dict]:
    """Dev accuracy of the base model and of one adapter per variant on `task`'s reference agent
    with `edits` applied: (results, dataset stats). Results are {"model", "steps", "train_loss",
    "train_s", "dev", "wins", "losses"} (wins and losses against the base, per item); the base
    row has model "base" and only "dev". `report` sees each result as soon as it is measured."""
    by_id = {e.id: e for e in LIBRARY}
    if unknown := [e for e in edits if e not in by_id]:
        raise ValueError(f"unknown edits {unknown}; the library has {sorted(by_id)}")
    code = task.reference_agent.read_text()
    for edit_id in edits:
        code = apply_edit(code, by_id[edit_id])
    scaffold = svc.paths.gen(1) / "target_agent.py"
    scaffold.parent.mkdir(parents=True, exist_ok=True)
    scaffold.write_text(code)
    pool = task.splits()["pool"]
    rollout = svc.config.rollout_items
    if dev_chunk < 1:
        raise ValueError(f"dev_chunk={dev_chunk}: score at least one dev item per agent run")
    if dev_items < 1 or rollout + dev_items > len(pool):
        raise ValueError(f"{rollout} rollout + {dev_items} dev items do not fit the training pool ({len(pool)} items)")
    dev = pool[-dev_items:]
    base = Candidate(generation=1, lever="meta", scaffold_path=str(scaffold), scaffold_sha=sha(code), adapter=None)
    evaluate(svc, task, base, ["feedback"])
    evaluate(svc, task, base, ["rollout"], purpose="rollout")
    rows, stats = sft_rows(svc.db, svc.paths.run_id, base.scaffold_sha)
    prompts, prompt_stats = reward_rows(svc.db, svc.paths.run_id, base.scaffold_sha)
    base_score, base_items = score_dev(svc, task, base, dev, dev_chunk)
    results = [{"model": "base", "dev": base_score}]
    report(results[-1])
    for i, variant in enumerate(variants):
        out = svc.paths.root / "adapters" / f"probe_{i}"
        out.mkdir(parents=True, exist_ok=True)
        settings = FinetuneConfig(**(svc.config.finetune.model_dump() | variant))
        method, _ = resolve_method(settings.method, prompt_stats["label"], prompt_stats["task"])
        settings.method = method
        data = rows if method == "sft" else prompts
        (out / "dataset.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
        summary = svc.trainer.train(out / "dataset.jsonl", svc.base_model(), out, settings)
        adapter = base.model_copy(update={"adapter": str(out.relative_to(svc.paths.root))})
        score, items = score_dev(svc, task, adapter, dev, dev_chunk)
        results.append({"model": json.dumps(variant), "method": method, "rows": len(data), "steps": summary.get("steps"),
                        "train_loss": summary.get("train_loss"), "train_s": summary.get("wall_s"),
                        "rewards": summary.get("reward_history"), "dev": score, **wins_losses(items, base_items)})
        report(results[-1])
    return results, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lawbench-mini", help="a built-in task name or a task folder")
    parser.add_argument("--edits", default="", help="comma-separated edit ids from nodes/edits.py")
    parser.add_argument("--variant", action="append", default=[], help="JSON of FinetuneConfig fields (repeatable)")
    parser.add_argument("--rollout", type=int, default=48, help="training-pool items the scaffold runs on for data")
    parser.add_argument("--dev", type=int, default=60, help="held-out training-pool items to score on")
    parser.add_argument("--dev-chunk", type=int, default=15, help="dev items scored per agent run (see above)")
    parser.add_argument("--run-id", default=f"probe-{int(time.time())}")
    args = parser.parse_args()
    task = resolve_task(args.task)
    config = RunConfig.from_env().model_copy(update={"rollout_items": args.rollout})  # SIA_CONFIG, as `sia run`
    svc = Services.build(config, args.run_id)
    console = Console()
    results, stats = probe(svc, task, list(filter(None, args.edits.split(","))),
                           [json.loads(v) for v in args.variant], args.dev, args.dev_chunk,
                           report=lambda r: console.print(f"{r['model']}: dev {r['dev']:.3f}"))
    table = Table(title=f"{task.name}: dev = {args.dev} held-out pool items; training rows {stats}")
    for column in ("model", "method", "rows", "steps", "final loss", "train s", "dev accuracy", "wins / losses vs base"):
        table.add_column(column)
    for r in results:
        fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
        table.add_row(r["model"], r.get("method", ""), fmt(r.get("rows"), "d"), fmt(r.get("steps"), "d"),
                      fmt(r.get("train_loss"), ".3f"),
                      fmt(r.get("train_s"), ".0f"), f"{r['dev']:.3f}",
                      f"{r['wins']:.3f} / {r['losses']:.3f}" if "wins" in r else "")
    console.print(table)


if __name__ == "__main__":
    main()
