"""Bind model inputs from what the gateway has, by reading the model's signature.

The model contract names signature inputs after features, so the gateway needs no per-model code:

- `user_id`: string [B].
- `<view>__<feature>` of a user view (e.g. `user_recent__last_10_items` [B, 10],
  `user_features__views_7d` [B]): from `FeatureReader.user_features`; lists are padded/truncated
  to the input's last dimension.
- ranking only: `item_id` (string [B, N], the candidates), `retrieval_score` (float32 [B, N]) and
  `<item view>__<feature>` as [B, N] (lists as [B, N, D]) from `FeatureReader.item_features`.
- `hour_of_day` / `day_of_week` (int64 [B]): request context (UTC; Monday = 0).

Missing values become zero / "" of the input's dtype; an input nothing can fill is fed zeros
(and reported in `Bound.unbound`), so a model may add a feature before the store serves it.
B is always 1 here (one user per request).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from serving.tfs_lean import DT_STRING, NUMPY_OF_DT, InputSpec

USER_ID = "user_id"
ITEM_ID = "item_id"
RETRIEVAL_SCORE = "retrieval_score"
CONTEXT = ("hour_of_day", "day_of_week")


@dataclass
class Bound:
    """Inputs ready for Predict, and which signature inputs had no source."""

    inputs: dict[str, np.ndarray]
    unbound: list[str] = field(default_factory=list)


def context(now: datetime) -> dict[str, int]:
    """Request context features (UTC)."""
    return {"hour_of_day": now.hour, "day_of_week": now.weekday()}


def _np_type(spec: InputSpec) -> Any:
    return object if spec.dtype == DT_STRING else NUMPY_OF_DT.get(spec.dtype, np.float32)


def _zero(spec: InputSpec) -> Any:
    return b"" if spec.dtype == DT_STRING else 0


def _scalar(value: Any, spec: InputSpec) -> Any:
    if value is None:
        return _zero(spec)
    if spec.dtype == DT_STRING:
        return value if isinstance(value, bytes) else str(value).encode()
    return value


def _width(spec: InputSpec, axis: int, default: int) -> int:
    """Size of `axis` from the signature (unknown -> `default`)."""
    if len(spec.shape) > axis and spec.shape[axis] > 0:
        return spec.shape[axis]
    return default


def _padded(values: Sequence[Any] | None, width: int, spec: InputSpec) -> list[Any]:
    values = list(values or [])[:width]
    return [_scalar(v, spec) for v in values] + [_zero(spec)] * (width - len(values))


def user_value(value: Any, spec: InputSpec) -> np.ndarray:
    """One user's feature as a [1] or [1, D] array (lists padded to the signature's D)."""
    if len(spec.shape) >= 2 or isinstance(value, list | tuple | np.ndarray):
        width = _width(spec, 1, max(1, len(value) if isinstance(value, list | tuple | np.ndarray) else 1))
        seq = value if isinstance(value, list | tuple | np.ndarray) else ([] if value is None else [value])
        return np.array([_padded(seq, width, spec)], dtype=_np_type(spec))
    return np.array([_scalar(value, spec)], dtype=_np_type(spec))


def item_column(values: Sequence[Any], spec: InputSpec) -> np.ndarray:
    """A candidate column as [1, N] (or [1, N, D] for list-valued features)."""
    np_type = _np_type(spec)
    if isinstance(values, np.ndarray) and values.dtype.kind == "f" and spec.dtype != DT_STRING:
        # The snapshot's numeric columns (NaN = missing -> 0, as for None below).
        return np.nan_to_num(values, nan=0.0).astype(np_type, copy=False).reshape(1, -1)
    if len(spec.shape) >= 3 or any(isinstance(v, list | tuple | np.ndarray) for v in values[:1]):
        width = _width(spec, 2, max((len(v) for v in values if v is not None), default=1))
        return np.array([[_padded(v, width, spec) for v in values]], dtype=np_type)
    if spec.dtype == DT_STRING:  # few distinct values (categories): encode each once
        encoded: dict[Any, Any] = {}
        return np.array(
            [[encoded[v] if v in encoded else encoded.setdefault(v, _scalar(v, spec)) for v in values]], dtype=object
        )
    if None in values:
        values = [0 if v is None else v for v in values]
    return np.array([values], dtype=np_type)


def _fill(spec: InputSpec, candidates: int | None) -> np.ndarray:
    """Zeros for an input nothing can fill: [1, N, ...] for ranking inputs of rank >= 2."""
    dims = list(spec.shape) or [1]
    dims[0] = 1
    for axis in range(1, len(dims)):
        if dims[axis] <= 0:
            dims[axis] = candidates if (axis == 1 and candidates) else 1
    return np.full(dims, _zero(spec), dtype=_np_type(spec))


def bind(
    specs: Mapping[str, InputSpec],
    *,
    user_id: str,
    user_features: Mapping[str, Any],
    ctx: Mapping[str, int],
    candidates: Sequence[str] | None = None,
    retrieval_scores: Sequence[float] | np.ndarray | None = None,
    item_features: Mapping[str, Sequence[Any]] | None = None,
    candidate_bytes: Sequence[bytes] | None = None,
) -> Bound:
    """Fill every signature input (see module doc).

    Args:
        specs: the signature's inputs (`tfs_lean.input_specs_of`).
        user_id: the user.
        user_features: `{"<view>__<feature>": value}`.
        ctx: context features (`context(now)`).
        candidates: candidate ids (ranking).
        retrieval_scores: one per candidate (ranking).
        item_features: columns aligned with `candidates` (ranking).
        candidate_bytes: `candidates` UTF-8 encoded, when the caller has them (retrieval's output).
    """
    out: dict[str, np.ndarray] = {}
    unbound: list[str] = []
    n = len(candidates) if candidates is not None else None
    for name, spec in specs.items():
        if name == USER_ID:
            out[name] = np.array([user_id.encode()], dtype=object)
        elif name == ITEM_ID and candidates is not None:
            raw = candidate_bytes if candidate_bytes is not None else [c.encode() for c in candidates]
            out[name] = np.array([raw], dtype=object)
        elif name == RETRIEVAL_SCORE and retrieval_scores is not None:
            out[name] = np.asarray(retrieval_scores, dtype=_np_type(spec)).reshape(1, -1)
        elif name in ctx:
            out[name] = np.array([ctx[name]], dtype=_np_type(spec))
        elif name in user_features:
            out[name] = user_value(user_features[name], spec)
        elif item_features is not None and name in item_features:
            out[name] = item_column(item_features[name], spec)
        else:
            out[name] = _fill(spec, n)
            unbound.append(name)
    return Bound(out, unbound)
