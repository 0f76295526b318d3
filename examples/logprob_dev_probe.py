"""Would the target model add to its classifier if its per-label log-probabilities were added to
the classifier's scores? Measured on held-out data before building it into the gateway.

    python examples/logprob_dev_probe.py --task lawbench [--adapter runs/R/adapters/A/adapter] \
        [--dev 400] [--unsure 120] [--shortlist 2] [--text-chars 150] [--calibrate]

Dev is the last `--dev` items of the task's training pool (never feedback, selection or test
items; nor rollout items, as in `examples/lora_dev_probe.py`, as long as the adapter's run had
rollout + dev items within the pool); the classifier is the reference agent's own
(`fit_classifier`: character TF-IDF + LinearSVC), fitted on the rest of the pool. On the
`--unsure` dev items with the smallest margin between the classifier's two best labels, the model
(base, or with a LoRA adapter merged in) sees the prompt the `classifier-labels-N` scaffold would
send and scores each shortlisted label as the JSON answer the scaffold asks for (the summed log-probability
of its tokens, not normalised by length, as a sequence's probability is). A label's combined score
is the classifier's score plus lambda times the model's log-probability; lambda is chosen by
two-fold cross-validation on those items. With `--calibrate` the model's score is
log p(label | case) - log p(label | the prompt without the case), which removes how likely the
model finds a label on its own. The model runs in this process on the CPU (float32):
this is a measurement outside any run, and the gateway serves no log-probabilities today.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sia.gateway.model_store import load_model
from sia.tasks.classification import load_reference_agent
from sia.tasks.registry import resolve_task

LAMBDAS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def label_logprobs(model, tokenizer, messages: list[dict], labels: list[str]) -> list[float]:
    """log p(`{"label": L}` | prompt) under the chat template, for each label L (one batch)."""
    prompt = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"]
    rows = [prompt + tokenizer(json.dumps({"label": c}, ensure_ascii=False), add_special_tokens=False)["input_ids"]
            for c in labels]
    width, pad = max(map(len, rows)), tokenizer.pad_token_id or 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    return [float(logp[j, torch.arange(len(prompt) - 1, len(r) - 1), torch.tensor(r[len(prompt):])].sum())
            for j, r in enumerate(rows)]


def combined_right(cases: list[dict], lam: float) -> int:
    return sum(c["labels"][int(np.argmax(np.array(c["scores"]) + lam * np.array(c["logprobs"])))] == c["gold"]
               for c in cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lawbench")
    parser.add_argument("--adapter", help="a LoRA adapter folder (default: the base model)")
    parser.add_argument("--dev", type=int, default=400)
    parser.add_argument("--unsure", type=int, default=120, help="dev items with the smallest classifier margin")
    parser.add_argument("--shortlist", type=int, default=2)
    parser.add_argument("--text-chars", type=int, default=150)
    parser.add_argument("--calibrate", action="store_true",
                        help="also score each label with the case text removed and use the difference "
                             "(pointwise mutual information between case and label)")
    args = parser.parse_args()
    pool = resolve_task(args.task).splits()["pool"]
    if not 0 < args.dev < len(pool) or not 0 < args.unsure <= args.dev:
        parser.error(f"need 0 < --unsure <= --dev < {len(pool)} (the training pool's size)")
    train, dev = pool[:-args.dev], pool[-args.dev:]
    agent = load_reference_agent()
    agent.SCAFFOLD.update(classifier_labels=args.shortlist, text_chars=args.text_chars)
    scores, known = agent.fit_classifier(train, table=False)
    dev_scores = scores(dev)
    top2 = np.sort(dev_scores, axis=1)[:, -2:]
    unsure = np.argsort(top2[:, 1] - top2[:, 0])[: args.unsure]

    model, tokenizer = load_model(adapter=Path(args.adapter) if args.adapter else None, precision="fp32")
    cases = []
    for i in unsure:
        order = np.argsort(-dev_scores[i])[: args.shortlist]
        labels = [known[j] for j in order]
        messages = agent.build_messages(dev[i]["text"], [], labels)  # no shots in this scaffold
        logprobs = label_logprobs(model, tokenizer, messages, labels)
        if args.calibrate:  # subtract log p(label | the same prompt without the case): the label's own prior
            prior = label_logprobs(model, tokenizer, agent.build_messages("", [], labels), labels)
            logprobs = [a - b for a, b in zip(logprobs, prior)]
        cases.append({"gold": dev[i]["label"], "labels": labels, "scores": [float(dev_scores[i][j]) for j in order],
                      "logprobs": logprobs})
    n = len(cases)
    print(f"{args.task}: {n} least sure of {args.dev} dev items; model: {args.adapter or 'base'}"
          f"{' (calibrated: log p(label | case) - log p(label | no case))' if args.calibrate else ''}")
    print(f"classifier top-1 {combined_right(cases, 0.0) / n:.3f}; gold in its top {args.shortlist} "
          f"{sum(c['gold'] in c['labels'] for c in cases) / n:.3f}; the model's own pick "
          f"{sum(c['labels'][int(np.argmax(c['logprobs']))] == c['gold'] for c in cases) / n:.3f}")
    print("right per lambda: " + ", ".join(f"{lam}: {combined_right(cases, lam)}" for lam in LAMBDAS))
    held_out = 0
    for fold in (0, 1):
        fit = [c for k, c in enumerate(cases) if k % 2 == fold]
        rest = [c for k, c in enumerate(cases) if k % 2 != fold]
        lam = max(LAMBDAS, key=lambda v: (combined_right(fit, v), -v))
        held_out += combined_right(rest, lam)
        print(f"fold {fold}: lambda {lam} chosen, {combined_right(rest, lam)} right on the other half "
              f"(classifier alone {combined_right(rest, 0.0)})")
    print(f"two-fold held-out: {held_out}/{n} right; classifier alone {combined_right(cases, 0.0)}/{n}")


if __name__ == "__main__":
    main()
