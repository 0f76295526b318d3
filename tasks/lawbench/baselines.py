"""Classical baselines on a task's private test split, trained on its public training data only:
what the language model in a scaffold has to beat.

    python -m sia.tasks.lawbench.baselines [--task lawbench] [--json FILE]

For a text task (lawbench): character 1-2-gram TF-IDF with a multinomial logistic regression
and with a linear SVM, both on all training cases; and the scaffold's own classifier alone
(the reference agent's `classifier_ranking`, top-1, fitted on what an agent sees in a run:
the training pool without the feedback and selection items). For a table task
(spaceship-titanic): scikit-learn's HistGradientBoostingClassifier with default settings on
the public table plus cabin deck and side, group number and total spend, and again the
scaffold's own classifier alone. Deterministic; a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from sia.tasks.classification import load_reference_agent


def as_case(row: dict) -> dict:
    return {"id": row["id"], "text": row["text"], "label": row["label"], "fields": row.get("fields") or {}}


def text_baselines(train: list[dict], test: list[dict]) -> dict[str, list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    x_train = vectorizer.fit_transform([r["text"] for r in train])
    x_test = vectorizer.transform([r["text"] for r in test])
    y = [r["label"] for r in train]
    return {
        "char 1-2-gram TF-IDF + logistic regression": list(LogisticRegression(C=20, max_iter=300).fit(x_train, y).predict(x_test)),
        "char 1-2-gram TF-IDF + linear SVM": list(LinearSVC(C=1.0).fit(x_train, y).predict(x_test)),
    }


def spaceship_features(rows: list[dict], categories: dict[str, list[str]]) -> np.ndarray:
    """The public table's columns plus cabin deck/number/side, group number and total spend;
    text columns as their index in `categories` (sorted values seen in training)."""
    spend = ("RoomService", "FoodCourt", "ShoppingMall", "Spa", "VRDeck")
    number = lambda v: float(v) if v not in (None, "") else np.nan  # noqa: E731
    out = []
    for r in rows:
        f = dict(r["fields"])
        f["Deck"], num, f["Side"] = ((f.get("Cabin") or "").split("/") + ["", "", ""])[:3]
        out.append([number(f.get(c)) for c in ("Age", *spend)]
                   + [sum(number(f.get(c)) if f.get(c) else 0.0 for c in spend), number(num),
                      float(int(str(f.get("PassengerId") or r["id"]).split("_")[0]))]
                   + [float(categories[c].index(f[c])) if f.get(c) in categories[c] else np.nan for c in categories])
    return np.array(out, dtype=float)


def _categories(rows: list[dict]) -> dict[str, list[str]]:
    names = ("HomePlanet", "CryoSleep", "Destination", "VIP")
    cats = {c: sorted({r["fields"].get(c) for r in rows} - {None, ""}) for c in names}
    cabins = [((r["fields"].get("Cabin") or "").split("/") + ["", "", ""])[:3] for r in rows]
    cats["Deck"] = sorted({c[0] for c in cabins} - {""})
    cats["Side"] = sorted({c[2] for c in cabins} - {""})
    return cats


def table_baselines(train: list[dict], test: list[dict]) -> dict[str, list[str]]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    categories = _categories(train)
    model = HistGradientBoostingClassifier(random_state=0)
    model.fit(spaceship_features(train, categories), [r["label"] for r in train])
    return {"HistGradientBoosting (default settings) + deck, side, group, total spend":
            list(model.predict(spaceship_features(test, categories)))}


def main() -> None:
    from sia.tasks.registry import resolve_task

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="lawbench", help="lawbench or spaceship-titanic")
    parser.add_argument("--json", help="also write the accuracies to this file")
    args = parser.parse_args()
    task = resolve_task(args.task)
    splits = task.splits()
    train = [as_case(r) for r in splits["feedback"] + splits["selection"] + splits["pool"]]
    test = [as_case(r) for r in splits["test"]]
    table = bool(test[0]["fields"])
    results = {}
    started = time.perf_counter()
    predictions = table_baselines(train, test) if table else text_baselines(train, test)
    ranking = load_reference_agent().classifier_ranking(test, [as_case(r) for r in splits["pool"]], task.classes, table)
    predictions["the scaffold's classifier alone (its top-1; trained on the pool an agent sees)"] = [r[0][0] for r in ranking]
    for name, labels in predictions.items():
        correct = int(sum(task.score_item(p, r["label"]) for p, r in zip(labels, splits["test"])))
        results[name] = {"accuracy": correct / len(test), "correct": correct, "n": len(test)}
        print(f"{name}: test accuracy {correct / len(test):.4f} ({correct}/{len(test)})")
    print(f"{len(train)} training cases, {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, ensure_ascii=False)


if __name__ == "__main__":
    main()
