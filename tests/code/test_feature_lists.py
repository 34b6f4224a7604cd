"""The training-set readers (models.data) give the same model inputs whether a frame's list
columns are Python lists (Feast's output in memory) or Arrow arrays (`read_frame` on the saved
training set), cut and padded to the model's widths."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from models.data import history_inputs, query_codes, query_inputs, read_frame
from models.features import HISTORY_COUNTS, HISTORY_ITEMS, HISTORY_LAST_DAY, HISTORY_LEN, RECENT_ITEMS
from models.train import reconsumption_share

AT = datetime(2025, 3, 1, tzinfo=UTC)


def _frame() -> pd.DataFrame:
    long = [f"i{n}" for n in range(HISTORY_LEN + 7)]  # longer than the model reads
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "item_id": ["i1", "x", "i5", "i0"],
            "event_timestamp": [AT] * 4,
            RECENT_ITEMS: [["a", "b"], [], None, ["c"]],
            HISTORY_ITEMS: [["i1", "i2"], ["i3"], None, long],
            HISTORY_COUNTS: [[3, 1], [2], None, list(range(len(long)))],
            HISTORY_LAST_DAY: [[100.5, 90.0], [80.0], None, [float(n) for n in range(len(long))]],
        }
    )


def test_arrow_backed_lists_read_as_python_lists_do(tmp_path: Path) -> None:
    built = _frame()
    built.to_parquet(tmp_path / "frame.parquet", index=False)
    read = read_frame(tmp_path / "frame.parquet")
    assert isinstance(read[HISTORY_ITEMS].dtype, pd.ArrowDtype)  # no Python list per row
    for inputs in (query_inputs, history_inputs):
        want, got = inputs(built, AT), inputs(read, AT)
        assert sorted(want) == sorted(got)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    items = query_inputs(read, AT)[HISTORY_ITEMS]
    assert items.shape == (4, HISTORY_LEN) and items[3, -1] == f"i{HISTORY_LEN - 1}" and items[2, 0] == ""
    assert reconsumption_share(read) == reconsumption_share(built) == 0.5  # u1 re-buys i1, u4 i0


def test_coded_query_lists_decode_to_the_query_inputs(tmp_path: Path) -> None:
    built = _frame()
    built.to_parquet(tmp_path / "frame.parquet", index=False)
    read = read_frame(tmp_path / "frame.parquet")
    width = 3  # the query tower's history_len: the lists are cut there
    for frame in (built, read):
        want, got = query_inputs(frame, AT), query_codes(frame, AT, width)
        assert sorted(want) == sorted(got)
        for name, values in got.items():
            if isinstance(values, tuple):
                distinct, codes = values
                assert codes.dtype == np.int32
                values = distinct[codes]
            cut = want[name][:, :width] if name in (HISTORY_ITEMS, HISTORY_COUNTS) else want[name]
            np.testing.assert_array_equal(values, cut, err_msg=name)
