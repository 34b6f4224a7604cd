"""History-first retrieval lists only where users come back to what they have."""

from __future__ import annotations

import pandas as pd


def test_history_first_lists_follow_reconsumption() -> None:
    from datetime import UTC, datetime

    from models.data import Catalog
    from models.train import RECONSUMPTION_MIN, TrainingSet, TrainParams, history_first, reconsumption_share

    rows = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "user_history__items": [["a", "x"], [], None, ["z"]],
        }
    )
    assert reconsumption_share(rows) == 0.25
    assert reconsumption_share(rows.iloc[:0]) == 0.0
    catalog = Catalog.__new__(Catalog)
    at = datetime(2025, 1, 1, tzinfo=UTC)

    def decided(frame: pd.DataFrame, given: bool | None) -> bool | None:
        ts = TrainingSet(frame, frame, frame, frame, frame, catalog, at, at, len(frame))
        return history_first(ts, TrainParams(history_candidates=given)).history_candidates

    assert decided(rows, None) is (0.25 >= RECONSUMPTION_MIN) is True
    never = rows.assign(user_history__items=[["x"], ["y"], ["z"], []])
    assert decided(never, None) is False
    assert decided(never, True) is True and decided(rows, False) is False
