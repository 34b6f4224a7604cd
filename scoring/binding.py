"""Bind model inputs from features and the request context, by reading the model's signature.

The model contract names signature inputs after features, so no caller needs per-model code:

- `user_id`: string [B].
- `<view>__<feature>` of a user view (e.g. `user_recent__last_10_items` [B, 10],
  `user_features__views_7d` [B]): from `FeatureReader.user_features`; lists are padded/truncated
  to the input's last dimension.
- ranking only: `item_id` (string [B, N], the candidates), `retrieval_score` (float32 [B, N]) and
  `<item view>__<feature>` as [B, N] (lists as [B, N, D]) from `FeatureReader.item_features`.
- `hour_of_day`, `day_of_week`, `request_day` [B]: the request context (`scoring.context`).

Missing values (None, NaN) become zero / "" of the input's dtype. An input that nothing can fill
is an error (`UnboundInputError`), never a zero-filled tensor: a model whose signature asks for a
feature without a serving source would be scored on inputs it never saw in evaluation.
B is always 1 here (one user per call).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from scoring.context import CONTEXT
from serving.tfs_client import DT_STRING, NUMPY_OF_DT, InputSpec

USER_ID = "user_id"
ITEM_ID = "item_id"
RETRIEVAL_SCORE = "retrieval_score"


class UnboundInputError(ValueError):
    """Signature inputs that no source fills: the model cannot be served as it was evaluated.

    Attributes:
        inputs: the input names, sorted.
        model / version: the model version, when the caller knows it.
    """

    def __init__(self, inputs: Sequence[str], model: str | None = None, version: int | None = None) -> None:
        self.inputs = sorted(inputs)
        self.model = model
        self.version = version
        where = f"{model} version {version}" if model is not None else "the model"
        super().__init__(
            f"{where} asks for input(s) {', '.join(self.inputs)} that nothing serves: add a serving source "
            "(a feature in the feature service, or a context input in scoring.context) or drop the input"
        )


def missing_sources(
    specs: Mapping[str, InputSpec],
    *,
    user_columns: Collection[str],
    item_columns: Collection[str] = (),
    ranks_candidates: bool = False,
) -> list[str]:
    """The signature inputs no source fills.

    Args:
        specs: the signature's inputs.
        user_columns: the user features the reader serves (`<view>__<feature>`).
        item_columns: the item features it serves (ranking).
        ranks_candidates: the signature scores candidates (`item_id`, `retrieval_score`, items).
    """
    known = {USER_ID, *CONTEXT, *user_columns}
    if ranks_candidates:
        known |= {ITEM_ID, RETRIEVAL_SCORE, *item_columns}
    return sorted(name for name in specs if name not in known)


def _np_type(spec: InputSpec) -> Any:
    return object if spec.dtype == DT_STRING else NUMPY_OF_DT.get(spec.dtype, np.float32)


def _zero(spec: InputSpec) -> Any:
    return b"" if spec.dtype == DT_STRING else 0


def _missing(value: Any) -> bool:
    """None, or NaN (how an offline frame says missing)."""
    return value is None or (isinstance(value, float) and value != value)


def _scalar(value: Any, spec: InputSpec) -> Any:
    if _missing(value):
        return _zero(spec)
    if spec.dtype == DT_STRING:
        return value if isinstance(value, bytes) else str(value).encode()
    return value


def _width(spec: InputSpec, axis: int, default: int) -> int:
    """Size of `axis` from the signature (unknown -> `default`)."""
    if len(spec.shape) > axis and spec.shape[axis] > 0:
        return spec.shape[axis]
    return default


def _padded(values: Sequence[Any] | np.ndarray | None, width: int, spec: InputSpec) -> list[Any]:
    values = [] if values is None else list(values)[:width]
    return [_scalar(v, spec) for v in values] + [_zero(spec)] * (width - len(values))


def user_value(value: Any, spec: InputSpec) -> np.ndarray:
    """One user's feature as a [1] or [1, D] array (lists padded to the signature's D)."""
    if _missing(value):
        value = None
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
        values = [None if _missing(v) else v for v in values]
        width = _width(spec, 2, max((len(v) for v in values if v is not None), default=1))
        return np.array([[_padded(v, width, spec) for v in values]], dtype=np_type)
    if spec.dtype == DT_STRING:  # few distinct values (categories): encode each once
        encoded: dict[Any, Any] = {}
        return np.array(
            [[encoded[v] if v in encoded else encoded.setdefault(v, _scalar(v, spec)) for v in values]], dtype=object
        )
    if any(_missing(v) for v in values):
        values = [0 if _missing(v) else v for v in values]
    return np.array([values], dtype=np_type)


def bind(
    specs: Mapping[str, InputSpec],
    *,
    user_id: str,
    user_features: Mapping[str, Any],
    ctx: Mapping[str, float],
    candidates: Sequence[str] | None = None,
    retrieval_scores: Sequence[float] | np.ndarray | None = None,
    item_features: Mapping[str, Sequence[Any]] | None = None,
    candidate_bytes: Sequence[bytes] | None = None,
) -> dict[str, np.ndarray]:
    """Fill every signature input (see module doc).

    Args:
        specs: the signature's inputs (`tfs_client.input_specs_of`).
        user_id: the user.
        user_features: `{"<view>__<feature>": value}`: every user feature the reader serves,
            missing values as None.
        ctx: the request context (`scoring.context.request_context`).
        candidates: candidate ids (ranking).
        retrieval_scores: one per candidate (ranking).
        item_features: columns aligned with `candidates` (ranking).
        candidate_bytes: `candidates` UTF-8 encoded, when the caller has them (retrieval's output).

    Raises:
        UnboundInputError: an input that none of these fills.
    """
    out: dict[str, np.ndarray] = {}
    unbound: list[str] = []
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
            unbound.append(name)
    if unbound:
        raise UnboundInputError(unbound)
    return out
