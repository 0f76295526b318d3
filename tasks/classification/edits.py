"""The library of typed scaffold edits of the classification reference agent
(`reference_agent.py` beside this file), used when the configured LLM cannot write code.

The agent exposes its settings in a top-level `SCAFFOLD = {...}` dict literal. An edit sets one
key to a value of the same type; it is applied to the source text through the AST, so the rest of
the file and its comments are untouched and the diff shows exactly one changed line. A scaffold
without the edit's key (another agent, or a rewrite that dropped it) is never offered the edit.

Each edit says which settings override it (`overridden_by`): while any of them is on (non-zero,
True), the agent ignores the edit's key, so the edit would change no prompt and is not offered.
Likewise an edit that only acts on another setting (`requires`) is offered once one of those is on.
"""

from __future__ import annotations

import ast

from pydantic import BaseModel, Field


class ScaffoldEdit(BaseModel):
    id: str
    key: str = Field(description="The SCAFFOLD key it sets (the edit needs the scaffold to have it, same type).")
    value: bool | int | float | str
    description: str
    overridden_by: tuple[str, ...] = Field((), description="SCAFFOLD keys that, while on, make the agent ignore `key`.")
    requires: tuple[str, ...] = Field((), description="SCAFFOLD keys of which one must be on for `key` to matter "
                                                      "(none: always).")
    max_classes: int | None = Field(None, description="Not offered on tasks with more labels than this (e.g. listing "
                                                      "every label in each prompt costs too much on a 191-label task).")


LIBRARY: list[ScaffoldEdit] = [
    ScaffoldEdit(id="retrieved-shots-2", key="retrieved_shots", value=2,
                 description="few-shot: add the 2 most similar training cases (retrieved nearest neighbours) with their labels"),
    ScaffoldEdit(id="centroid-labels-2", key="centroid_labels", value=2, overridden_by=("classifier_labels",),
                 description="answer extraction: allow only the 2 best labels of a TF-IDF nearest-centroid classifier "
                             "fitted on the training data, listed best first in the prompt"),
    ScaffoldEdit(id="classifier-labels-3", key="classifier_labels", value=3,
                 description="answer extraction: allow only the 3 best labels of a classifier fitted on the training "
                             "data (TF-IDF linear SVM for texts, gradient-boosted trees for tables), best first"),
    ScaffoldEdit(id="classifier-decides-half", key="classifier_decides", value=0.5,
                 description="the classifier alone answers the half of the cases it is most confident about "
                             "(largest margin over its runner-up); the model answers the rest"),
    ScaffoldEdit(id="order-check", key="order_check", value=True, requires=("classifier_labels", "centroid_labels"),
                 description="ask again with the shortlist reversed and keep the model's answer only when both orders "
                             "agree, else the shortlist's best label (a model that picks a position changes nothing)"),
    ScaffoldEdit(id="neighbour-labels-2", key="neighbour_labels", value=2,
                 overridden_by=("centroid_labels", "classifier_labels"),
                 description="answer extraction: allow only the labels of the 2 most similar training cases"),
    ScaffoldEdit(id="retrieved-shots-4", key="retrieved_shots", value=4,
                 description="few-shot: add the 4 most similar training cases with their labels"),
    ScaffoldEdit(id="retrieved-shots-1", key="retrieved_shots", value=1,
                 description="few-shot: only the single most similar training case, so the answer follows its nearest neighbour"),
    ScaffoldEdit(id="classifier-labels-5", key="classifier_labels", value=5,
                 description="answer extraction: allow only the 5 best labels of the classifier, best first"),
    ScaffoldEdit(id="classifier-labels-2", key="classifier_labels", value=2,
                 description="answer extraction: allow only the classifier's 2 best labels, best first"),
    ScaffoldEdit(id="classifier-decides-most", key="classifier_decides", value=0.8,
                 description="the classifier alone answers the 80% of the cases it is most confident about; "
                             "the model answers the rest"),
    ScaffoldEdit(id="neighbour-labels-4", key="neighbour_labels", value=4,
                 overridden_by=("centroid_labels", "classifier_labels"),
                 description="answer extraction: allow only the labels of the 4 most similar training cases"),
    ScaffoldEdit(id="fixed-shots-4", key="fixed_shots", value=4,
                 description="few-shot: add 4 fixed training examples covering different labels"),
    ScaffoldEdit(id="list-labels", key="list_labels", value=True, overridden_by=("centroid_labels", "classifier_labels"),
                 max_classes=40, description="list every allowed label in the system prompt (a shortlist is listed already)"),
    ScaffoldEdit(id="constrain-output", key="constrain_output", value=True,
                 description="constrain the answer to the allowed labels with a JSON schema"),
    ScaffoldEdit(id="votes-3", key="votes", value=3,
                 description="self-consistency: sample 3 answers and take the majority"),
    ScaffoldEdit(id="longer-text", key="text_chars", value=150, description="show more of each case's text"),
    ScaffoldEdit(id="shorter-text", key="text_chars", value=60, description="show only the start of each case's text"),
    ScaffoldEdit(id="more-retries", key="retries", value=4,
                 description="answer extraction: retry up to 4 times when no allowed label can be extracted"),
    ScaffoldEdit(id="sampling-warm", key="temperature", value=0.3, description="sampling: temperature 0.3 instead of greedy"),
]


def _scaffold_dict(tree: ast.Module) -> ast.Dict | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SCAFFOLD" for t in node.targets):
            return node.value if isinstance(node.value, ast.Dict) else None
    return None


def scaffold_settings(code: str) -> dict | None:
    """The SCAFFOLD dict of a scaffold, or None if it has none (then no library edit applies)."""
    try:
        node = _scaffold_dict(ast.parse(code))
        return ast.literal_eval(node) if node is not None else None
    except (SyntaxError, ValueError):
        return None


def available_edits(code: str, tried: list[str], n_classes: int | None = None) -> list[ScaffoldEdit]:
    """Edits that change something in this scaffold and were not tried before, in library order
    (with `n_classes`, the task's label count: only those that make sense at that size)."""
    settings = scaffold_settings(code) or {}
    return [e for e in LIBRARY if e.id not in tried and e.key in settings
            and type(settings[e.key]) is type(e.value) and settings[e.key] != e.value
            and not any(settings.get(k) for k in e.overridden_by)
            and (not e.requires or any(settings.get(k) for k in e.requires))
            and (n_classes is None or e.max_classes is None or n_classes <= e.max_classes)]


def apply_edit(code: str, edit: ScaffoldEdit) -> str:
    """Set SCAFFOLD[edit.key] = edit.value in the source text."""
    tree = ast.parse(code)
    node = _scaffold_dict(tree)
    if node is None:
        raise ValueError("the scaffold has no SCAFFOLD = {...} literal to edit")
    for key, value in zip(node.keys, node.values):
        if isinstance(key, ast.Constant) and key.value == edit.key:
            lines = code.splitlines(keepends=True)
            start = sum(len(line) for line in lines[: value.lineno - 1]) + len(
                lines[value.lineno - 1].encode()[: value.col_offset].decode())
            end = sum(len(line) for line in lines[: value.end_lineno - 1]) + len(
                lines[value.end_lineno - 1].encode()[: value.end_col_offset].decode())
            return code[:start] + repr(edit.value) + code[end:]
    raise ValueError(f"SCAFFOLD has no key {edit.key!r}")
