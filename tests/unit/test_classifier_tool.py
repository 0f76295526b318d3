"""The reference agent's classifier tool (a scikit-learn classifier fitted on the agent's own
train.csv) and the edits that use it, checked on small hand-made texts and tables."""

from __future__ import annotations

import math

import pytest

from sia.config import SandboxLimits
from sia.tasks.classification import load_reference_agent
from sia.tasks.classification.edits import LIBRARY, apply_edit, available_edits
from tests.fakes import REFERENCE_AGENT


@pytest.fixture(scope="module")
def agent():
    return load_reference_agent()


def case(i, text, label, fields=None):
    return {"id": str(i), "text": text, "label": label, "fields": fields or {}}


def test_text_classifier_ranks_the_matching_label_first_with_a_margin(agent):
    train = [case(i, f"他{w}了一个{o}", label) for i, (w, label) in enumerate(
        [("偷", "盗窃"), ("骗", "诈骗"), ("打", "故意伤害")] * 6) for o in ["钱包"]]
    test = [case("a", "他偷了一个手机", None), case("b", "他骗了一个老人", None), case("c", "他打了一个人", None)]
    ranking = agent.classifier_ranking(test, train, ["盗窃", "诈骗", "故意伤害", "伪证"], table=False)
    assert [r[0][0] for r in ranking] == ["盗窃", "诈骗", "故意伤害"]
    assert all("伪证" not in r[0] for r in ranking)  # a label with no training case is never ranked
    assert all(r[1] > 0 for r in ranking)


def test_table_features_split_composite_cells_and_drop_identifier_like_text(agent):
    rows = [case(i, "", None, {"Cabin": f"{'AB'[i % 2]}/{i}/{'PS'[i % 2]}", "Age": str(20 + i) if i else "",
                               "Name": f"person {i}"}) for i in range(30)]
    matrix = agent.table_features(rows, ["Cabin", "Age", "Name"])
    assert len(matrix) == 30 and len(matrix[0]) == 4  # deck, number, side, age; the 30 names are dropped
    assert matrix[1][:3] == [1.0, 1.0, 1.0] and matrix[2][:3] == [0.0, 2.0, 0.0]
    assert math.isnan(matrix[0][3]) and matrix[5][3] == 25.0


def test_table_classifier_learns_a_rule_and_binary_margins_are_signed(agent):
    train = [case(i, "", "True" if i % 3 == 0 else "False", {"Spend": str(i % 3), "Deck": "AB"[i % 2]})
             for i in range(90)]
    test = [case("x", "", None, {"Spend": "0", "Deck": "A"}), case("y", "", None, {"Spend": "2", "Deck": "B"})]
    ranking = agent.classifier_ranking(test, train, ["False", "True"], table=True)
    assert [r[0][0] for r in ranking] == ["True", "False"]
    assert all(r[1] > 0.5 for r in ranking)


def test_classifier_edits_are_offered_and_listing_191_labels_is_not(agent):
    code = REFERENCE_AGENT.read_text()
    ids = [e.id for e in available_edits(code, [], n_classes=191)]
    assert "classifier-labels-3" in ids and "classifier-decides-half" in ids and "list-labels" not in ids
    assert "list-labels" in [e.id for e in available_edits(code, [], n_classes=12)]
    shortlisted = apply_edit(code, next(e for e in LIBRARY if e.id == "classifier-labels-3"))
    after = [e.id for e in available_edits(shortlisted, [])]
    assert "centroid-labels-2" not in after and "neighbour-labels-2" not in after  # the classifier overrides them


def test_order_check_keeps_an_answer_only_when_both_orders_agree(agent, monkeypatch):
    """A model that copies the first listed label is overruled by the shortlist's best; one that
    names the same label in both orders is kept; the second ask lists the labels reversed."""
    asked = []

    def scripted(picks_position):
        def ask(messages, classes, item, temperature):
            asked.append(list(classes))
            return agent.answer_json(classes[0] if picks_position else "诈骗")
        return ask

    ranked = ["盗窃", "诈骗", "抢劫"]
    monkeypatch.setitem(agent.SCAFFOLD, "classifier_labels", 3)
    monkeypatch.setitem(agent.SCAFFOLD, "order_check", True)
    row = case("a", "他骗了一个老人", None)
    monkeypatch.setattr(agent, "ask", scripted(picks_position=True))
    label, trace = agent.solve(row, [], ranked, "x", ranked=ranked)
    assert asked == [ranked, ranked[::-1]] and trace["order_check"] == {"reversed_answer": "抢劫", "agreed": False}
    assert label == "盗窃"  # the model's answer flipped with the order: the classifier's best stands
    monkeypatch.setattr(agent, "ask", scripted(picks_position=False))
    assert agent.solve(row, [], ranked, "x", ranked=ranked)[0] == "诈骗"
    monkeypatch.setitem(agent.SCAFFOLD, "order_check", False)
    asked.clear()
    assert agent.solve(row, [], ranked, "x", ranked=ranked)[0] == "诈骗" and len(asked) == 1


def test_the_reversed_ask_changes_only_the_listed_order(agent, monkeypatch):
    sent = []
    monkeypatch.setattr(agent, "ask", lambda messages, classes, item, t: sent.append(messages)
                        or agent.answer_json(classes[0]))
    for key, value in (("classifier_labels", 2), ("order_check", True), ("retrieved_shots", 1)):
        monkeypatch.setitem(agent.SCAFFOLD, key, value)
    train = [case("t", "他偷了一辆车", "盗窃")]
    train[0]["grams"] = agent.bigrams(train[0]["text"])
    retrievals, nearest = [], agent.nearest
    monkeypatch.setattr(agent, "nearest", lambda *a: retrievals.append(a) or nearest(*a))
    agent.solve(case("a", "他骗了一个老人", None), train, ["盗窃", "诈骗"], "x", ranked=["盗窃", "诈骗"])
    first, second = sent
    assert "Allowed charges: 盗窃; 诈骗\n" in first[0]["content"]
    assert "Allowed charges: 诈骗; 盗窃\n" in second[0]["content"]
    assert second[1:] == first[1:] and len(first) == 4  # the same retrieved example and case text
    assert len(retrievals) == 1  # retrieved once: the second ask reuses the first's examples


def test_order_check_is_offered_only_with_a_ranked_shortlist():
    code = REFERENCE_AGENT.read_text()
    assert "order-check" not in [e.id for e in available_edits(code, [])]
    for shortlist in ("classifier-labels-3", "centroid-labels-2"):
        edited = apply_edit(code, next(e for e in LIBRARY if e.id == shortlist))
        assert "order-check" in [e.id for e in available_edits(edited, [])]


def test_sandbox_time_limits_grow_with_the_items_an_agent_predicts():
    limits = SandboxLimits(wall_timeout_s=600, cpu_time_s=1200, item_wall_s=3.0, item_cpu_s=0.5)
    scaled = limits.for_items(1868)
    assert scaled.wall_timeout_s == 600 + 3.0 * 1868 and scaled.cpu_time_s == 1200 + 934
    assert scaled.memory_mb == limits.memory_mb and limits.for_items(0) == limits


def test_the_summary_says_where_the_time_went(tmp_path):
    from sia.nodes.finish import time_table

    timings = tmp_path / "timings.jsonl"
    assert time_table(timings) == ""  # no file: no section
    timings.write_text('{"generation": 1, "purpose": "task", "items": {"selection": 573}, "wall_s": 300.5}\n'
                       '{"generation": 3, "purpose": "training", "items": {"rows": 200}, "wall_s": 99.5}\n')
    table = time_table(timings)
    assert "| 1 | task | selection 573 | 300.5 |" in table and "| 3 | training | rows 200 | 99.5 |" in table
    assert "| | total | | 400.0 |" in table
