"""Training batches are gathered by row number: every row once a pass, reshuffled each pass, the
same batches for a seed, and each batch holds the rows' own values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.data import catalog_from_frame
from models.train import retrieval_dataset, retrieval_rows, row_batches


def test_row_batches_cover_every_row_once_a_pass_reshuffled_and_seeded() -> None:
    rows, size = 1_000, 64
    data = row_batches(rows, size, seed=7)
    passes = [[b.numpy() for b in data] for _ in range(2)]
    for batches in passes:
        assert [len(b) for b in batches] == [size] * (rows // size) + [rows % size]
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(rows))
    assert not np.array_equal(np.concatenate(passes[0]), np.concatenate(passes[1]))  # reshuffled
    same = row_batches(rows, size, seed=7)
    again = [[b.numpy() for b in same] for _ in range(2)]
    for want, got in zip(passes, again, strict=True):  # the same orders for a seed
        np.testing.assert_array_equal(np.concatenate(got), np.concatenate(want))
    other = np.concatenate([b.numpy() for b in row_batches(rows, size, seed=8)])
    assert not np.array_equal(other, np.concatenate(passes[0]))


def test_gathered_batches_hold_the_rows_values() -> None:
    rows = 1_000
    rng = np.random.default_rng(0)
    inputs = {
        "user_id": np.array([f"u{n % 37}" for n in range(rows)], dtype=object),
        "history": np.array([[f"i{(n + j) % 91}" for j in range(5)] for n in range(rows)], dtype=object),
        "price": rng.random(rows).astype(np.float32),
        "row": np.arange(rows),
    }
    distinct = np.array(["", "a", "b"], dtype=object)
    coded = (distinct, (np.arange(rows * 2) % 3).astype(np.int32).reshape(rows, 2))
    seen = []
    for batch in retrieval_dataset({**inputs, "recent": coded}, rows, 64, seed=7):
        at = batch["row"].numpy()
        seen.append(at)
        for name, values in inputs.items():
            got = batch[name].numpy()
            want = values[at]
            if values.dtype == object:
                got = got.astype(str)
                want = want.astype(str)
            np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(batch["recent"].numpy().astype(str), distinct[coded[1][at]].astype(str))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(rows))


def test_retrieval_rows_are_the_filtered_sorted_deduplicated_frame() -> None:
    rng = np.random.default_rng(1)
    n = 500
    frame = pd.DataFrame(
        {
            "user_id": [f"u{k}" for k in rng.integers(0, 20, n)],
            "item_id": [f"i{k}" for k in rng.integers(0, 30, n)],
            "event_timestamp": pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 50, n), "h"),
            "payload": np.arange(n),
        }
    )
    catalog = catalog_from_frame(
        pd.DataFrame(
            {
                "item_id": [f"i{k}" for k in range(25)],  # i25..i29 are not in the catalog
                "category": "c",
                "description": "",
                "price": 1.0,
                "created_at": pd.Timestamp("2024-01-01", tz="UTC"),
                "available": True,
            }
        )
    )
    want = frame[frame["item_id"].isin(set(catalog.item_ids))]
    want = want.sort_values("event_timestamp", kind="stable")
    want = want.drop_duplicates(["user_id", "item_id"], keep="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(retrieval_rows(frame, catalog), want)
