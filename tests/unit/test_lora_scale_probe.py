"""examples/lora_scale_probe.py: each training row's shortlist comes from a classifier that did not
see the row, and the row is the prompt the `classifier-labels-2` scaffold sends, gold as answer."""

from __future__ import annotations

import json

import pytest

from sia.tasks.classification import load_reference_agent
from tests.examples import load_example

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def probe():
    return load_example("lora_scale_probe")


WORDS = {"盗窃": "窃取手机钱包财物", "诈骗": "虚构事实骗取钱款", "抢劫": "持刀威胁劫取现金"}


def test_rows_come_from_the_other_half_and_carry_the_gold_answer(probe):
    rows = [{"text": f"被告人{WORDS[label]}第{i}次", "label": label} for i in range(12) for label in WORDS]
    # A charge seen once: only a classifier fitted on this very row could shortlist it.
    rows.append({"text": "被告人非法捕捞水产品", "label": "非法捕捞水产品"})
    agent = load_reference_agent()
    agent.SCAFFOLD.update(classifier_labels=2)
    out = probe.cross_fitted_rows(agent, rows, shortlist=2)
    assert len(out) == len(rows) - 1  # every common-charge case has its gold in a top two of three
    for margin, row in out:
        assert margin >= 0
        gold = json.loads(row["completion"])["label"]
        assert gold != "非法捕捞水产品"
        allowed = row["messages"][0]["content"].split("Allowed charges: ")[1].split("\n")[0].split("; ")
        assert len(allowed) == 2 and gold in allowed
        assert row["messages"][-1]["content"].startswith("案情：被告人")
