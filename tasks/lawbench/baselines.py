"""Baselines on the lawbench test ids: a classical text classifier (character 1-2-gram TF-IDF
with a multinomial logistic regression) trained on the training split only.

    python -m sia.tasks.lawbench.baselines            # prints test accuracy and time

Deterministic (seeded); about a minute on 2 CPU cores. A scaffold may use the same idea as a
tool (retrieval or a classifier over train.csv) before or instead of asking the model.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import torch


def char_ngrams(text: str) -> list[str]:
    return list(text) + [text[i:i + 2] for i in range(len(text) - 1)]


class TfidfLogReg:
    """TF-IDF over the `max_features` most frequent character 1-2-grams, then softmax regression."""

    def __init__(self, max_features: int = 50_000, epochs: int = 60, lr: float = 0.5, l2: float = 1e-6, seed: int = 0):
        self.max_features, self.epochs, self.lr, self.l2, self.seed = max_features, epochs, lr, l2, seed

    def _matrix(self, texts: list[str]) -> torch.Tensor:
        rows, cols, vals = [], [], []
        for r, text in enumerate(texts):
            counts = Counter(g for g in char_ngrams(text) if g in self.vocab)
            weights = {self.vocab[g]: (1 + math.log(c)) * self.idf[self.vocab[g]] for g, c in counts.items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for c, w in weights.items():
                rows.append(r)
                cols.append(c)
                vals.append(w / norm)
        return torch.sparse_coo_tensor([rows, cols], vals, (len(texts), len(self.vocab))).coalesce()

    def fit(self, texts: list[str], labels: list[str]) -> "TfidfLogReg":
        df = Counter(g for t in texts for g in set(char_ngrams(t)))
        self.vocab = {g: i for i, (g, _) in enumerate(df.most_common(self.max_features))}
        self.idf = [math.log((1 + len(texts)) / (1 + df[g])) + 1 for g in self.vocab]
        self.classes = sorted(set(labels))
        x = self._matrix(texts)
        y = torch.tensor([self.classes.index(lab) for lab in labels])
        torch.manual_seed(self.seed)
        self.w = torch.zeros(len(self.vocab), len(self.classes), requires_grad=True)
        self.b = torch.zeros(len(self.classes), requires_grad=True)
        opt = torch.optim.Adam([self.w, self.b], lr=self.lr / 10)
        for _ in range(self.epochs):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(torch.sparse.mm(x, self.w) + self.b, y) + self.l2 * (self.w ** 2).sum()
            loss.backward()
            opt.step()
        return self

    def predict(self, texts: list[str]) -> list[str]:
        with torch.no_grad():
            scores = torch.sparse.mm(self._matrix(texts), self.w) + self.b
        return [self.classes[i] for i in scores.argmax(dim=1).tolist()]


def main() -> None:
    from sia.tasks.registry import resolve_task

    task = resolve_task("lawbench")
    splits = task.splits()
    train = splits["feedback"] + splits["selection"] + splits["pool"]
    start = time.perf_counter()
    model = TfidfLogReg().fit([r["text"] for r in train], [r["label"] for r in train])
    preds = model.predict([r["text"] for r in splits["test"]])
    acc = sum(task.score_item(p, r["label"]) for p, r in zip(preds, splits["test"])) / len(preds)
    print(f"char 1-2-gram TF-IDF + logistic regression: test accuracy {acc:.4f} "
          f"({len(preds)} test ids, {len(train)} training cases, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
