"""The request context: the moment recommendations are for, as model inputs.

One function for training (each example's moment), evaluation (the cutoff) and serving (the
request's moment), so the three compute the same values the same way:

- `hour_of_day` (int64, 0..23, UTC) and `day_of_week` (int64, Monday = 0);
- `request_day` (float32): days since the Unix epoch, with the fraction of the day;
- `list_variant` (int64): which exclusions the list is for (`VARIANTS`, in that order), so a
  pair published per variant (`models.export.per_variant_pair`) serves each variant with the
  recommender the gate chose for it. Only such pairs ask for it; training never sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TypedDict

import numpy as np
import pandas as pd

from models.features import DAY_OF_WEEK, HOUR_OF_DAY, LIST_VARIANT, REQUEST_DAY

#: The context inputs a signature may ask for.
CONTEXT = (HOUR_OF_DAY, DAY_OF_WEEK, REQUEST_DAY, LIST_VARIANT)
NS_PER_DAY = 86_400 * 10**9


class Exclusions(TypedDict):
    """The gateway's exclusion settings (`RuleConfig` fields) for one variant's lists."""

    exclude_purchased: bool
    exclude_seen: bool


#: The lists a surface asks for, by their exclusions: `all` keeps the user's purchases (buy it
#: again), `new` drops them (the default answer), `unseen` drops everything the user acted on.
VARIANTS: dict[str, Exclusions] = {
    "all": {"exclude_purchased": False, "exclude_seen": False},
    "new": {"exclude_purchased": True, "exclude_seen": False},
    "unseen": {"exclude_purchased": True, "exclude_seen": True},
}
DEFAULT_VARIANT = "new"


def variant_of(exclude_purchased: bool, exclude_seen: bool) -> str:
    """The variant a request's exclusions ask for (`exclude_seen` implies purchases out)."""
    if exclude_seen:
        return "unseen"
    return "new" if exclude_purchased else "all"


def variant_code(variant: str) -> int:
    """`list_variant`'s value for `variant`: its position in `VARIANTS`."""
    try:
        return list(VARIANTS).index(variant)
    except ValueError:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}") from None


def context_columns(moments: pd.Series | pd.DatetimeIndex | Sequence[datetime]) -> dict[str, np.ndarray]:
    """The context inputs for many moments (naive moments are taken as UTC).

    Returns:
        `{"hour_of_day": int64 [N], "day_of_week": int64 [N], "request_day": float32 [N]}`.
    """
    stamps = pd.DatetimeIndex(pd.to_datetime(moments, utc=True))
    nanos = stamps.as_unit("ns").asi8
    return {
        HOUR_OF_DAY: stamps.hour.to_numpy(np.int64),
        DAY_OF_WEEK: stamps.dayofweek.to_numpy(np.int64),
        REQUEST_DAY: (nanos / NS_PER_DAY).astype(np.float32),
    }


def request_context(moment: datetime, variant: str = DEFAULT_VARIANT) -> dict[str, float]:
    """The context inputs for one moment (e.g. a request's) and list variant, as plain numbers."""
    ctx = {name: values[0].item() for name, values in context_columns([moment]).items()}
    return ctx | {LIST_VARIANT: variant_code(variant)}
