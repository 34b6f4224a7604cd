"""The item catalog held in memory: popular items (overall and per category) for the fallback
path, and the attributes the business rules need (category, availability, age) for paths that
do not read item features (precomputed, popular).

It is built from the item snapshot that `FastFeatureReader` loads from the online store (the
`item_features` view: popularity, category, age_days, available) and rebuilt when that snapshot
changes, i.e. when a new materialization marker lands. Once built it needs no service at all: it
is what the gateway serves when the online store is unreachable. Popular lists rank by popularity
alone; the rules drop the unavailable among them (`catalog__available`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scoring.rules import feature_column


@dataclass
class Catalog:
    """Item ids with popularity and rule attributes.

    Attributes:
        ids: item ids.
        popularity: one score per id (higher is more popular).
        columns: rule attributes aligned with `ids` (`category`, `age_days`, `available`).
        version: the snapshot (materialization marker) it was built from.
        top: how many items each popular list holds.
    """

    ids: list[str]
    popularity: np.ndarray
    columns: dict[str, list[Any]] = field(default_factory=dict)
    version: str | None = None
    top: int = 500

    def __post_init__(self) -> None:
        self._popular_cache: dict[str | None, tuple[list[str], np.ndarray, dict[str, list[Any]]]] = {}
        self.index = {item: n for n, item in enumerate(self.ids)}
        order = np.argsort(-self.popularity, kind="stable")
        self._popular = order[: self.top].tolist()
        self._by_category: dict[str, list[int]] = {}
        categories = self.columns.get("category") or [None] * len(self.ids)
        for n in order.tolist():
            cat = categories[n]
            if cat is None:
                continue
            bucket = self._by_category.setdefault(str(cat).casefold(), [])
            if len(bucket) < self.top:
                bucket.append(n)
        #: Category names (case-folded, sorted) that some item has.
        self.categories = sorted(self._by_category)

    @classmethod
    def from_columns(
        cls, columns: Mapping[str, Sequence[Any]], *, version: str | None = None, top: int = 500
    ) -> Catalog:
        """Build from item feature columns (`{"item_id": ids, "<view>__<feature>": values}`).

        Popularity is the `popularity` feature (missing = 0).
        """
        ids = [str(i) for i in columns["item_id"]]
        pop = feature_column(columns, "popularity") or [None] * len(ids)
        popularity = np.array([0.0 if p is None else float(p) for p in pop], dtype=np.float64)
        rule_columns = {}
        for name in ("category", "age_days", "available"):
            values = feature_column(columns, name)
            if values is not None:
                rule_columns[name] = list(values)
        return cls(ids, popularity, rule_columns, version, top)

    @classmethod
    def from_snapshot(cls, snapshot: Any, *, top: int = 500) -> Catalog:
        """Build from a `FastFeatureReader` item snapshot (`ItemSnapshot`)."""
        ids = list(snapshot.index)
        columns: dict[str, Sequence[Any]] = {"item_id": ids}
        for name, values in snapshot.columns.items():
            columns[name] = values[: len(ids)]  # the snapshot keeps a None slot at the end
        return cls.from_columns(columns, version=snapshot.version, top=top)

    def __len__(self) -> int:
        return len(self.ids)

    def with_items(self, new: Mapping[str, str | None]) -> Catalog:
        """This catalog plus items it does not know (id -> category or None): popularity 0, so
        after every known item, available, brand new. Returns self when none is new."""
        added = [(i, c) for i, c in new.items() if i not in self.index]
        if not added:
            return self
        extra: dict[str, list[Any]] = {
            "category": [c and c.lower() for _, c in added],
            "available": [True] * len(added),
            "age_days": [0.0] * len(added),
        }
        columns: dict[str, list[Any]] = {
            name: [*values, *extra.get(name, [None] * len(added))] for name, values in self.columns.items()
        }
        columns.setdefault("category", [None] * len(self.ids) + extra["category"])
        popularity = np.concatenate([self.popularity, np.zeros(len(added))])
        return Catalog([*self.ids, *(i for i, _ in added)], popularity, columns, self.version, self.top)

    def has_category(self, category: str) -> bool:
        """True when some item has `category` (case-insensitive, as the rules match it)."""
        return category.casefold() in self._by_category

    def popular(self, category: str | None = None) -> tuple[list[str], np.ndarray]:
        """Popular ids (best first) and their popularity, overall or within `category`."""
        rows = self._popular if category is None else self._by_category.get(category.casefold(), [])
        return [self.ids[n] for n in rows], self.popularity[rows]

    def popular_with_features(self, category: str | None = None) -> tuple[list[str], np.ndarray, dict[str, list[Any]]]:
        """`popular(category)` with its `features`, computed once per category: the fallback path
        must stay the cheapest one, since it serves when everything else is slow."""
        key = None if category is None else category.casefold()
        cached = self._popular_cache.get(key)
        if cached is None:
            ids, popularity = self.popular(category)
            cached = (ids, popularity, self.features(ids))
            if len(self._popular_cache) < 1000:  # bounded: a request may name any category
                self._popular_cache[key] = cached
        return cached

    def features(self, item_ids: Sequence[str]) -> dict[str, list[Any]]:
        """Rule attributes for `item_ids` (None for ids the catalog lacks)."""
        rows = [self.index.get(i) for i in item_ids]
        return {
            f"catalog__{name}": [None if r is None else values[r] for r in rows]
            for name, values in self.columns.items()
        }


EMPTY = Catalog([], np.zeros(0), {}, None)
