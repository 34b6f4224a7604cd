"""Feature-reader helpers for tests: an in-memory `FeatureReader` and a way to compare the fast
reader's arrays with Feast's lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from features.reader import ITEM_KEY


def as_lists(columns: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Columns of `features.reader.as_array` back to lists (NaN -> None), e.g. to compare with
    `item_features`."""
    out = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            out[name] = [None if v != v else v for v in values.tolist()]
        else:
            out[name] = list(values)
    return out


class InMemoryFeatureReader:
    """A `FeatureReader` over plain dicts, for unit tests of code around the seam.

    Args:
        users: user id -> {column: value}.
        items: item id -> {column: value}.
        user_columns / item_columns: every column the real reader would return, so missing
            entities come back as None in the same shape.
    """

    def __init__(
        self,
        users: Mapping[str, Mapping[str, Any]],
        items: Mapping[str, Mapping[str, Any]],
        user_columns: Sequence[str],
        item_columns: Sequence[str],
    ) -> None:
        self._users = users
        self._items = items
        self._user_columns = list(user_columns)
        self._item_columns = list(item_columns)

    @property
    def user_columns(self) -> list[str]:
        return list(self._user_columns)

    @property
    def item_columns(self) -> list[str]:
        return list(self._item_columns)

    def user_features(self, user_id: str) -> dict[str, Any]:
        row = self._users.get(user_id, {})
        return {c: row.get(c) for c in self._user_columns}

    def item_features(self, item_ids: Sequence[str]) -> dict[str, list[Any]]:
        rows = [self._items.get(i, {}) for i in item_ids]
        return {ITEM_KEY: list(item_ids), **{c: [r.get(c) for r in rows] for c in self._item_columns}}
