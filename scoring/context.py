"""The request context: the moment recommendations are for, as model inputs.

One function for training (each example's moment), evaluation (the cutoff) and serving (the
request's moment), so the three compute the same values the same way:

- `hour_of_day` (int64, 0..23, UTC) and `day_of_week` (int64, Monday = 0);
- `request_day` (float32): days since the Unix epoch, with the fraction of the day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import pandas as pd

from models.features import DAY_OF_WEEK, HOUR_OF_DAY, REQUEST_DAY

#: The context inputs a signature may ask for.
CONTEXT = (HOUR_OF_DAY, DAY_OF_WEEK, REQUEST_DAY)
NS_PER_DAY = 86_400 * 10**9


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


def request_context(moment: datetime) -> dict[str, float]:
    """The context inputs for one moment (e.g. a request's), as plain numbers."""
    return {name: values[0].item() for name, values in context_columns([moment]).items()}
