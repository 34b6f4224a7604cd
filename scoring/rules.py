"""Business rules applied after ranking (and to the precomputed and popular paths): pure functions.

Order (`apply_rules`): drop ids the caller excluded, the user's purchases (unless asked not to)
and everything else the user saw (when asked to), unavailable items and items outside the
requested category; boost fresh items; sort; cap each category's share for diversity; take the
top N.

Item features are Feast columns (`<view>__<feature>`); the rules find the ones they need by
feature name (`category`, `age_days`, `available`), whatever view holds them, and skip a rule
whose feature does not exist (e.g. `available` until the catalog feature lands).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from towerflow.settings import ScoringSettings

#: Item features the rules read (any view: `<view>__<feature>`).
RULE_ITEM_FEATURES = ("category", "available", "age_days")
#: User features whose values are item ids the user already has: the last items acted on, the
#: purchase history the models read (`user_history__items`) and every item bought in the last
#: year (`user_seen__bought`).
RECENT_ITEMS = "last_10_items"
PURCHASED_ITEMS = ("items", "bought")
#: Every item the user acted on in the last year, views included (`user_seen__seen`).
SEEN_ITEMS = "seen"


@dataclass(frozen=True)
class RuleConfig:
    """What one request asks for, plus the gateway's rule settings.

    Attributes:
        count: how many items to return.
        exclude: ids never to return.
        category: only items of this category (case-insensitive), or None.
        exclude_purchased: drop what the user already bought (False for "buy it again").
        exclude_seen: also drop everything else the user acted on, views included (media-like
            surfaces, where nobody wants what they already saw).
        category_cap: at most this share of `count` per category (at least 1 item).
        freshness_boost: added to the score of a brand-new item, halving every half-life.
        freshness_half_life_days: see `freshness_boost`.
        popular_size: popular items (overall and per category) the fallback list is taken from.
    """

    count: int
    exclude: frozenset[str] = field(default_factory=frozenset)
    category: str | None = None
    exclude_purchased: bool = True
    exclude_seen: bool = False
    category_cap: float = 0.4
    freshness_boost: float = 0.0
    freshness_half_life_days: float = 30.0
    popular_size: int = 500

    @classmethod
    def from_settings(cls, settings: ScoringSettings, count: int = 10) -> RuleConfig:
        """The rules as configured (`towerflow.settings.ScoringSettings`), for `count` items."""
        return cls(
            count=count,
            category_cap=settings.category_cap,
            freshness_boost=settings.freshness_boost,
            freshness_half_life_days=settings.freshness_half_life_days,
            popular_size=settings.popular_size,
        )


def _feature_of(name: str) -> str:
    """`<view>__<feature>` (or a bare `<feature>`) -> `<feature>`."""
    return name.rpartition("__")[2]


def feature_column(columns: Mapping[str, Any], feature: str) -> Any | None:
    """The column of feature `feature` in `{"<view>__<feature>": ...}` (first view that has it)."""
    for name, values in columns.items():
        if _feature_of(name) == feature:
            return values
    return None


def rule_columns(columns: Iterable[str]) -> set[str]:
    """The columns among `columns` that `apply_rules` reads."""
    return {c for c in columns if _feature_of(c) in RULE_ITEM_FEATURES}


def _items_of(user_features: Mapping[str, Any], features: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for feature in features:
        values = feature_column(user_features, feature)
        if values is not None and not isinstance(values, float) and len(values):
            out.update(str(v) for v in values if v)
    return out


def purchased(user_features: Mapping[str, Any]) -> set[str]:
    """Items the user already has: the last 10 items acted on plus everything bought."""
    return _items_of(user_features, (RECENT_ITEMS, *PURCHASED_ITEMS))


def seen(user_features: Mapping[str, Any]) -> set[str]:
    """`purchased` plus every other item the user acted on (views included)."""
    return _items_of(user_features, (RECENT_ITEMS, *PURCHASED_ITEMS, SEEN_ITEMS))


def excluded(user_features: Mapping[str, Any], config: RuleConfig) -> set[str]:
    """What `config` keeps out of this user's list: the caller's ids, and the user's purchases
    or everything seen as asked."""
    banned = set(config.exclude)
    if config.exclude_seen:
        banned |= seen(user_features)
    elif config.exclude_purchased:
        banned |= purchased(user_features)
    return banned


def freshness(scores: np.ndarray, age_days: Sequence[Any] | None, boost: float, half_life: float) -> np.ndarray:
    """`scores + boost * 2^(-age / half_life)`; unknown ages (None, NaN) get no boost."""
    if age_days is None or boost == 0:
        return scores
    if isinstance(age_days, np.ndarray) and age_days.dtype.kind == "f":
        ages = np.where(np.isnan(age_days), np.inf, age_days)
    else:
        ages = np.array([np.inf if a is None else a for a in age_days], dtype=np.float64)
    return scores + boost * np.exp2(-np.maximum(ages, 0.0) / half_life)


def keep_mask(
    item_ids: Sequence[str],
    *,
    banned: set[str] | frozenset[str],
    available: Sequence[Any] | None = None,
    categories: Sequence[Any] | None = None,
    category: str | None = None,
) -> np.ndarray:
    """True for the items that may be shown: not banned, not unavailable, in `category` if given.

    An item whose availability is unknown (None) stays; with a category filter an item of
    unknown category goes.
    """
    keep = np.fromiter((i not in banned for i in item_ids), dtype=bool, count=len(item_ids))
    if available is not None:  # numpy's False is not Python's: compare by value
        keep &= np.fromiter((a is None or bool(a) for a in available), dtype=bool, count=len(item_ids))
    if category is not None:
        wanted = category.casefold()
        cats = categories if categories is not None else [None] * len(item_ids)
        keep &= np.fromiter(
            (c is not None and str(c).casefold() == wanted for c in cats), dtype=bool, count=len(item_ids)
        )
    return keep


def cap_per_category(order: Iterable[int], categories: Sequence[Any] | None, count: int, cap: int) -> list[int]:
    """Pick `count` positions from `order` (best first) with at most `cap` per category.

    The cap is soft: when too few categories remain to fill `count`, the best of the overflow
    fills the rest (a short list is worse than a less diverse one). Unknown categories are not
    capped.
    """
    picked: list[int] = []
    overflow: list[int] = []
    per: dict[Any, int] = {}
    for n in order:
        cat = categories[n] if categories is not None else None
        if cat is not None and per.get(cat, 0) >= cap:
            overflow.append(n)
            continue
        picked.append(n)
        if cat is not None:
            per[cat] = per.get(cat, 0) + 1
        if len(picked) == count:
            return picked
    return picked + overflow[: count - len(picked)]


def cap_for(count: int, share: float) -> int:
    """Items allowed per category for a response of `count` items."""
    return max(1, math.ceil(count * share))


def _first_of_each(order: Iterable[int], item_ids: Sequence[str]) -> Iterator[int]:
    """The positions in `order` whose id was not seen earlier in it, lazily."""
    seen: set[str] = set()
    for n in order:
        if item_ids[n] not in seen:
            seen.add(item_ids[n])
            yield n


def apply_rules(
    item_ids: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    item_features: Mapping[str, Sequence[Any]],
    user_features: Mapping[str, Any],
    config: RuleConfig,
) -> list[tuple[str, float]]:
    """The final list: `(item_id, score)` best first, at most `config.count`, ids distinct.

    Args:
        item_ids: candidates.
        scores: one score per candidate (higher is better).
        item_features: columns aligned with `item_ids` (`<view>__<feature>`); may be empty.
        user_features: the user's features (for purchases); may be empty.
        config: the request and rule settings.
    """
    if len(item_ids) == 0:
        return []
    banned = excluded(user_features, config)
    categories = feature_column(item_features, "category")
    keep = keep_mask(
        item_ids,
        banned=banned,
        available=feature_column(item_features, "available"),
        categories=categories,
        category=config.category,
    )
    boosted = freshness(
        np.asarray(scores, dtype=np.float64),
        feature_column(item_features, "age_days"),
        config.freshness_boost,
        config.freshness_half_life_days,
    )
    candidates = np.flatnonzero(keep)
    order = candidates[np.argsort(-boosted[candidates], kind="stable")]
    # Lazy: the cap stops once `count` are picked, usually a few dozen of the 1,000 candidates in.
    distinct = _first_of_each(order.tolist(), item_ids)
    chosen = cap_per_category(distinct, categories, config.count, cap_for(config.count, config.category_cap))
    return [(item_ids[n], float(boosted[n])) for n in chosen]
