#!/usr/bin/env python3
"""Reference task agent for classification (lawbench-mini, lawbench, spaceship-titanic: any
csv-classification or csv-table task).

Run: python target_agent.py --dataset_dir D --working_dir W
Reads D/test.csv (id,text; or a table's columns), D/train.csv (plus the label), D/classes.json
and the header of D/sample_submission.csv; asks the target model through the OpenAI-compatible
endpoint in OPENAI_BASE_URL for each case; writes W/submission.csv (that header, e.g. id,label)
and W/agent_execution.json (one trajectory per item).
The SCAFFOLD block holds every setting the scaffold-edit library may change.
"""

import argparse
import collections
import csv
import json
import math
import os
import random
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

SCAFFOLD = {
    "instruction": "You are a legal assistant. Read the Chinese criminal case and answer with the charge (罪名).",
    "text_chars": 80,
    "fixed_shots": 0,
    "retrieved_shots": 0,
    "shot_chars": 50,
    "list_labels": False,
    "neighbour_labels": 0,
    "centroid_labels": 0,
    "classifier_labels": 0,
    "classifier_decides": 0.0,
    "constrain_output": True,
    "votes": 1,
    "order_check": False,
    "temperature": 0.0,
    "max_tokens": 96,  # the longest of lawbench's 191 labels is 67 tokens as JSON
    "retries": 2,
}


def bigrams(text):
    return {text[i:i + 2] for i in range(len(text) - 1)}


def nearest(text, train, k):
    """The k training cases sharing the most character bigrams with `text` (Jaccard)."""
    if k <= 0:
        return []
    grams = bigrams(text)
    scored = sorted(train, key=lambda r: -len(grams & r["grams"]) / (len(grams | r["grams"]) or 1))
    return scored[:k]


def fixed_examples(train, k):
    """k training cases, one label at a time, so the examples cover as many labels as possible."""
    by_label = collections.defaultdict(list)
    for row in train:
        by_label[row["label"]].append(row)
    out, labels = [], sorted(by_label)
    for i in range(k):
        if labels:
            rows = by_label[labels[i % len(labels)]]
            out.append(rows[(i // len(labels)) % len(rows)])
    return out


def answer_json(label):
    return json.dumps({"label": label}, ensure_ascii=False)


def tfidf(text, idf, unseen_idf):
    counts = collections.Counter(text[i:i + 2] for i in range(len(text) - 1))
    weights = {g: (1 + math.log(n)) * idf.get(g, unseen_idf) for g, n in counts.items()}
    norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
    return {g: w / norm for g, w in weights.items()}


def fit_centroids(train):
    """A nearest-centroid classifier: per label, the normalised sum of its cases' TF-IDF vectors."""
    df = collections.Counter(g for r in train for g in {r["text"][i:i + 2] for i in range(len(r["text"]) - 1)})
    idf = {g: math.log((1 + len(train)) / (1 + n)) + 1 for g, n in df.items()}
    unseen = math.log(1 + len(train)) + 1
    sums = collections.defaultdict(collections.Counter)
    for r in train:
        sums[r["label"]].update(tfidf(r["text"], idf, unseen))
    centroids = {}
    for label, vec in sums.items():
        norm = math.sqrt(sum(w * w for w in vec.values())) or 1.0
        centroids[label] = {g: w / norm for g, w in vec.items()}
    return idf, unseen, centroids


CENTROIDS = None  # fitted in main() when SCAFFOLD["centroid_labels"] > 0


def table_features(rows, columns):
    """A table as numbers: numeric cells as floats, composite cells ("B/12/P", "0012_01") split
    into parts, other text as per-part category codes; missing cells stay NaN. A text part with
    more distinct values than a tenth of the rows (names, ids) says nothing general and is left out."""
    def parts(value):
        value = (value or "").strip()
        return value.replace("_", "/").split("/") if value else []
    cells = [[parts(r["fields"].get(c)) for c in columns] for r in rows]
    width = [max((len(row[j]) for row in cells), default=0) for j in range(len(columns))]
    slots = [(j, i) for j in range(len(columns)) for i in range(width[j])]
    codes, keep = {}, []
    for j, i in slots:
        values = [row[j][i] if i < len(row[j]) else "" for row in cells]
        texts = {v for v in values if v and not _is_number(v)}
        if len(texts) > max(1, len(rows) // 10):
            continue
        codes[(j, i)] = {v: float(n) for n, v in enumerate(sorted(texts))}
        keep.append((j, i))
    return [[_cell_number(row[j][i] if i < len(row[j]) else "", codes[(j, i)]) for j, i in keep] for row in cells]


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _cell_number(cell, codes):
    if not cell:
        return float("nan")
    return float(cell) if _is_number(cell) else codes[cell]


def fit_classifier(train, table):
    """A classical classifier fitted on train.csv (scikit-learn): character 1-2-gram TF-IDF with
    a linear SVM for texts, gradient-boosted trees for tables. Returns (scores, classes) where
    scores(rows) gives one row of per-class scores per case (higher is better); None without
    scikit-learn, then the nearest-centroid classifier stands in for texts."""
    try:
        import numpy as np
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC
    except ImportError:
        return None
    labels = [r["label"] for r in train]
    if len(set(labels)) < 2:
        return None
    if table:
        columns = [c for c in train[0]["fields"] if c]
        model = HistGradientBoostingClassifier(random_state=0)
        n = len(train)

        def featurize(rows):  # one coding of train and predicted rows together, so codes agree
            return np.array(table_features(train + rows, columns), dtype=float)[n:]
        model.fit(np.array(table_features(train, columns), dtype=float), labels)
        return (lambda rows: model.predict_proba(featurize(rows))), list(model.classes_)
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    model = LinearSVC(C=1.0).fit(vectorizer.fit_transform([r["text"] for r in train]), labels)

    def scores(rows):
        d = model.decision_function(vectorizer.transform([r["text"] for r in rows]))
        return d if d.ndim == 2 else np.stack([-d, d], axis=1)  # binary: one column per class
    return scores, list(model.classes_)


def classifier_ranking(test, train, classes, table):
    """Per test case: every label the classifier knows, best first, and its margin (top score
    minus the runner-up's), or None per case when no classifier could be fitted."""
    fitted = fit_classifier(train, table)
    if fitted is None:
        return [None] * len(test)
    scores, known = fitted
    out = []
    for row in scores(test):
        order = sorted(range(len(known)), key=lambda i: -row[i])
        ranked = [known[i] for i in order if known[i] in classes]
        margin = float(row[order[0]] - row[order[1]]) if len(order) > 1 else float("inf")
        out.append((ranked, margin))
    return out


def allowed_labels(text, train, classes, ranked=None):
    """(labels, best_first): all labels; or the `classifier_labels` best labels of the classifier
    (`ranked`), or the `centroid_labels` best of the nearest-centroid classifier, then best_first
    is True; or the labels of the `neighbour_labels` most similar training cases."""
    if SCAFFOLD["classifier_labels"] > 0 and ranked:
        return ranked[: SCAFFOLD["classifier_labels"]], True
    if SCAFFOLD["centroid_labels"] > 0 and CENTROIDS is not None:
        idf, unseen, centroids = CENTROIDS
        q = tfidf(text, idf, unseen)
        ranked = sorted((c for c in classes if c in centroids),
                        key=lambda c: -sum(w * centroids[c].get(g, 0.0) for g, w in q.items()))
        return (ranked[: SCAFFOLD["centroid_labels"]], True) if ranked else (classes, False)
    k = SCAFFOLD["neighbour_labels"]
    if k <= 0:
        return classes, False
    near = {r["label"] for r in nearest(text, train, k)}
    return [c for c in classes if c in near] or classes, False


def system_prompt(classes):
    s = SCAFFOLD
    system = s["instruction"]
    if s["list_labels"] or s["centroid_labels"] > 0 or s["classifier_labels"] > 0:  # best first when ranked
        system += "\nAllowed charges: " + "; ".join(classes)
    return system + '\nReply with JSON: {"label": "<charge>"}'


def build_messages(text, train, classes):
    s = SCAFFOLD
    messages = [{"role": "system", "content": system_prompt(classes)}]
    shots = fixed_examples(train, s["fixed_shots"]) + nearest(text, train, s["retrieved_shots"])
    for shot in shots:
        messages.append({"role": "user", "content": "案情：" + shot["text"][: s["shot_chars"]]})
        messages.append({"role": "assistant", "content": answer_json(shot["label"])})
    messages.append({"role": "user", "content": "案情：" + text[: s["text_chars"]]})
    return messages


def ask(messages, classes, item, temperature):
    s = SCAFFOLD
    body = {"model": os.environ.get("SIA_MODEL", "default"), "messages": messages,
            "max_tokens": s["max_tokens"], "temperature": temperature, "metadata": {"item": item}}
    if s["constrain_output"]:
        schema = {"type": "object", "properties": {"label": {"type": "string", "enum": classes}},
                  "required": ["label"], "additionalProperties": False}
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "charge", "schema": schema}}
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
                 "X-SIA-Item": item})
    with urllib.request.urlopen(request, timeout=300) as resp:
        return json.loads(resp.read())["choices"][0]["message"]["content"]


def extract(raw, classes):
    """The label from a completion: JSON first, then the longest allowed label named in the text."""
    try:
        label = json.loads(raw).get("label")
        if label in classes:
            return label
    except (ValueError, AttributeError):
        pass
    named = [c for c in classes if c in raw]
    return max(named, key=len) if named else None


def submission_columns(dataset_dir):
    """The submission header: the view's sample_submission.csv, else id,label."""
    try:
        with open(os.path.join(dataset_dir, "sample_submission.csv"), encoding="utf-8") as f:
            header = next(csv.reader(f))
        return header[0], header[1]
    except (OSError, StopIteration, IndexError):
        return "id", "label"


def as_case(row, id_col, label_col):
    """{id, text, label, fields}: a text task's columns, or a table row rendered as
    `column=value; ...` (its feature cells kept in `fields` for the table classifier)."""
    text = row.get("text")
    fields = {k: v for k, v in row.items() if k not in (id_col, label_col)}
    if text is None:
        text = "; ".join(f"{k}={v}" for k, v in fields.items())
    return {"id": row.get(id_col, row.get("id")), "text": text, "label": row.get(label_col, row.get("label")),
            "fields": fields}


def answer(messages, classes, item, temperature, trace):
    """One allowed label from the model (up to `retries` more tries when none can be read), or None."""
    for _ in range(SCAFFOLD["retries"] + 1):
        try:
            raw = ask(messages, classes, item, temperature)
        except Exception as exc:  # network or server error: retry, then give up
            trace["errors"].append(f"{type(exc).__name__}: {exc}")
            continue
        trace["completions"].append(raw)
        label = extract(raw, classes)
        if label is not None:
            return label
    return None


def solve(row, train, classes, fallback, ranked=None, decided=False):
    """The label of one case and its trajectory: the classifier's top label when `decided`, else
    the model's answer among the allowed labels (majority of `votes`, `retries` on no answer).
    With `order_check`, the model is asked again with the allowed labels in reverse order, and its
    answer is kept only when both orders agree; otherwise the shortlist's best label stands (only
    for a ranked shortlist: the classifier's or the centroids'), so a model that picks a position
    rather than a label changes nothing."""
    s = SCAFFOLD
    if decided:
        return ranked[0], {"id": row["id"], "decided_by": "classifier", "label": ranked[0], "fallback": False,
                           "completions": [], "errors": []}
    classes, best_first = allowed_labels(row["text"], train, classes, ranked)
    messages = build_messages(row["text"], train, classes)
    trace = {"id": row["id"], "prompt_messages": len(messages), "allowed": len(classes), "completions": [],
             "errors": []}
    votes = []
    for v in range(s["votes"]):
        temperature = s["temperature"] if v == 0 else max(s["temperature"], 0.7)
        if (label := answer(messages, classes, row["id"], temperature, trace)) is not None:
            votes.append(label)
    label = collections.Counter(votes).most_common(1)[0][0] if votes else fallback
    if s["order_check"] and best_first and votes and len(classes) > 1:
        reverse = classes[::-1]
        reversed_messages = [{"role": "system", "content": system_prompt(reverse)}] + messages[1:]  # same shots
        again = answer(reversed_messages, reverse, row["id"], s["temperature"], trace)
        trace["order_check"] = {"reversed_answer": again, "agreed": again == label}
        if again != label:
            label = classes[0]
    trace["label"], trace["fallback"] = label, not votes
    return label, trace


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--working_dir", required=True)
    args = parser.parse_args()
    random.seed(0)
    with open(os.path.join(args.dataset_dir, "classes.json"), encoding="utf-8") as f:
        classes = json.load(f)
    id_col, label_col = submission_columns(args.dataset_dir)
    with open(os.path.join(args.dataset_dir, "train.csv"), encoding="utf-8") as f:
        train = [as_case(r, id_col, label_col) for r in csv.DictReader(f)]
    for row in train:
        row["grams"] = bigrams(row["text"][: SCAFFOLD["shot_chars"] * 2])
    with open(os.path.join(args.dataset_dir, "test.csv"), encoding="utf-8") as f:
        reader = csv.DictReader(f)
        test = [as_case(r, id_col, label_col) for r in reader]
        test_columns = reader.fieldnames or []
    global CENTROIDS
    if SCAFFOLD["centroid_labels"] > 0 and train:
        CENTROIDS = fit_centroids(train)
    fallback = collections.Counter(r["label"] for r in train).most_common(1)[0][0] if train else classes[0]
    ranking = [None] * len(test)
    if (SCAFFOLD["classifier_labels"] > 0 or SCAFFOLD["classifier_decides"] > 0) and train:
        try:
            ranking = classifier_ranking(test, train, classes, table="text" not in test_columns)
        except Exception as exc:  # noqa: BLE001 - the model still answers every case without the tool
            print(f"classifier tool failed ({type(exc).__name__}: {exc}); answering without it", file=sys.stderr)
    # the classifier alone answers its `classifier_decides` most confident share of the cases
    confident = sorted((i for i, r in enumerate(ranking) if r and r[0]), key=lambda i: -ranking[i][1])
    decided = set(confident[: int(SCAFFOLD["classifier_decides"] * len(test))])
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: solve(test[i], train, classes, fallback, ranking[i] and ranking[i][0],
                                                i in decided), range(len(test))))
    os.makedirs(args.working_dir, exist_ok=True)
    with open(os.path.join(args.working_dir, "submission.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([id_col, label_col])
        for row, (label, _) in zip(test, results):
            writer.writerow([row["id"], label])
    with open(os.path.join(args.working_dir, "agent_execution.json"), "w", encoding="utf-8") as f:
        json.dump([trace for _, trace in results], f, ensure_ascii=False, indent=1)
    print(f"predicted {len(results)} cases, {sum(t['fallback'] for _, t in results)} fell back")


if __name__ == "__main__":
    main()
