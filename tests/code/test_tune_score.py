"""A tuning trial's score (`models.tune.score_of`) is the gate's view: the worst ratio over the
gated variants of the primary metric to the best baseline's and of each target metric to its lift
over the best baseline's."""

from __future__ import annotations

import pytest

from models.gate import GatePolicy
from models.tune import score_of


def _report(two_stage: tuple[float, float], retrieval: tuple[float, float]) -> dict:
    rows = {"two_stage": two_stage, "retrieval": retrieval}
    return {
        "metrics": {
            v: {name: {"recall@10": top, "recall@100": deep} for name, (top, deep) in rows.items()}
            for v in ("all", "new")
        }
    }


BASELINES = {"all": {"popular": 0.5, "item_knn": 0.4}, "new": {"popular": 0.5}}
TARGETS = {"all": {"recall@10": 0.2}, "new": {"recall@10": 0.2}}


def test_the_score_counts_the_top_of_the_list_at_its_lift() -> None:
    # Retrieval leads at depth (0.6 / 0.5 = 1.2) but reaches 0.21 / (1.1 * 0.2) = 0.95 at the top;
    # two-stage reaches 0.55 / 0.5 = 1.1 at depth and 0.3 / 0.22 = 1.36 at the top.
    report = _report(two_stage=(0.3, 0.55), retrieval=(0.21, 0.6))
    score, option = score_of(report, BASELINES, GatePolicy(), TARGETS)
    assert option == "two_stage" and score == pytest.approx(1.1)
    # On the primary metric alone retrieval is the better trial.
    score, option = score_of(report, BASELINES, GatePolicy(targets=()), TARGETS)
    assert option == "retrieval" and score == pytest.approx(1.2)
    assert score_of(report, BASELINES, GatePolicy()) == (pytest.approx(1.2), "retrieval")
