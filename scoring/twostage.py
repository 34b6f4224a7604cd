"""Retrieval -> item features -> ranking -> rules: the one implementation of the two-stage path.

The gateway runs these steps asynchronously over gRPC, with a time budget and a fallback around
each (serving/gateway/recommender.py); `score` runs them back to back over any synchronous model caller
(SavedModels in process: offline evaluation, `towerflow recommend`, the daily precompute). Both
bind inputs with `scoring.binding`, read the candidates with `candidates_of`, and finish with
`scoring.rules.apply_rules`, so a list scored offline is the list the gateway serves for the same
features and moment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from models.features import LIST_VARIANT
from scoring.binding import UnboundInputError, bind, missing_sources
from scoring.catalog import Catalog
from scoring.context import DEFAULT_VARIANT, request_context
from scoring.rules import RuleConfig, apply_rules
from serving.tfs_client import InputSpec, names

RETRIEVAL, RANKING = "retrieval", "ranking"
#: The ranking output naming what a published pair serves (`two_stage`, `retrieval`, a baseline).
RECOMMENDER = "recommender"

#: Item features for candidate ids: `{"item_id": ids, "<view>__<feature>": values aligned with ids}`.
ItemFeatures = Callable[[Sequence[str]], Mapping[str, Any]]


@dataclass(frozen=True)
class Candidates:
    """Retrieval's answer for one user, padding removed.

    Attributes:
        ids: item ids, best first.
        raw: the same ids as the model returned them (bytes), passed on to ranking unchanged.
        scores: float32 [N] retrieval scores.
        rows: int [N] the items' positions in the retrieval version's catalog, when it says.
    """

    ids: list[str]
    raw: list[bytes]
    scores: np.ndarray
    rows: np.ndarray | None


def candidates_of(outputs: Mapping[str, np.ndarray]) -> Candidates:
    """Candidates from a retrieval answer for one user (`item_ids`, `scores` [1, K], optionally
    `item_rows`); models pad lists shorter than K with ""."""
    raw = outputs["item_ids"][0].tolist()
    ids = names(raw)
    scores = np.asarray(outputs["scores"][0], dtype=np.float32)
    rows = outputs.get("item_rows")
    rows = rows[0] if rows is not None and rows.shape == outputs["item_ids"].shape else None
    keep = [n for n, i in enumerate(ids) if i]
    if len(keep) < len(ids):
        ids, raw, scores = [ids[n] for n in keep], [raw[n] for n in keep], scores[keep]
        rows = rows[keep] if rows is not None else None
    return Candidates(ids, raw, scores, rows)


def retrieval_inputs(
    specs: Mapping[str, InputSpec], *, user_id: str, user: Mapping[str, Any], ctx: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """The retrieval signature's inputs for one user."""
    return bind(specs, user_id=user_id, user_features=user, ctx=ctx)


def ranking_inputs(
    specs: Mapping[str, InputSpec],
    *,
    user_id: str,
    user: Mapping[str, Any],
    ctx: Mapping[str, float],
    candidates: Candidates,
    items: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """The ranking signature's inputs for one user's candidates."""
    return bind(
        specs,
        user_id=user_id,
        user_features=user,
        ctx=ctx,
        candidates=candidates.ids,
        retrieval_scores=candidates.scores,
        item_features=items,
        candidate_bytes=candidates.raw,
    )


def check_sources(
    model: str,
    version: int | None,
    specs: Mapping[str, InputSpec],
    user_columns: Sequence[str],
    item_columns: Sequence[str],
) -> None:
    """Raise `UnboundInputError` when the signature asks for an input no source serves."""
    missing = missing_sources(
        specs, user_columns=user_columns, item_columns=item_columns, ranks_candidates=model == RANKING
    )
    if missing:
        raise UnboundInputError(missing, model, version)


def popular_items(
    catalog: Catalog, user: Mapping[str, Any], rules: RuleConfig, already: Sequence[str] = ()
) -> list[tuple[str, float]]:
    """Popular items (in the requested category) through the rules, minus `already`: the
    fallback list, and what tops up a list shorter than `rules.count`."""
    wanted = replace(rules, count=rules.count - len(already), exclude=rules.exclude | set(already), freshness_boost=0.0)
    if wanted.count <= 0:
        return []
    ids, popularity, features = catalog.popular_with_features(rules.category)
    return apply_rules(ids, popularity, features, user, wanted)


def topped_up(
    items: list[tuple[str, float]], catalog: Catalog, user: Mapping[str, Any], rules: RuleConfig
) -> list[tuple[str, float]]:
    """`items`, followed by popular items when it is shorter than `rules.count`."""
    if len(items) >= rules.count:
        return items
    return items + popular_items(catalog, user, rules, [i for i, _ in items])


def is_cold(user: Mapping[str, Any]) -> bool:
    """The online store has no feature of the user: the gateway serves popular items."""
    return bool(user) and all(v is None for v in user.values())


def varies_by_variant(models: ModelCaller) -> bool:
    """The pair answers each list variant its own way (it reads `list_variant`): score it once
    per variant rather than once per user."""
    return any(LIST_VARIANT in models.specs(model) for model in (RETRIEVAL, RANKING))


class ModelCaller(Protocol):
    """Synchronous calls of the retrieval and ranking signatures of one model pair."""

    def specs(self, model: str) -> Mapping[str, InputSpec]:
        """The `serving_default` signature's inputs of `model` (`retrieval` or `ranking`)."""
        ...

    def predict(self, model: str, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Its outputs for `inputs` (arrays of the signature's dtypes)."""
        ...


@dataclass
class Scored:
    """One user's candidates with their item features and ranking scores, before the rules.

    One scoring serves any number of rule settings (counts, exclude_purchased) through `ranked`.
    """

    user_id: str
    user: Mapping[str, Any]
    candidates: Candidates
    items: Mapping[str, Any]
    scores: np.ndarray
    recommender: str | None = None  # what the pair serves (the ranking output `recommender`)

    def ranked(self, rules: RuleConfig) -> list[tuple[str, float]]:
        """The final list the gateway serves for `rules`."""
        return apply_rules(self.candidates.ids, self.scores, self.items, self.user, rules)

    def retrieved(self, rules: RuleConfig) -> list[tuple[str, float]]:
        """The final list retrieval alone would give (ranking skipped), through the same rules."""
        return apply_rules(self.candidates.ids, self.candidates.scores, self.items, self.user, rules)


def score(
    models: ModelCaller,
    *,
    user_id: str,
    user: Mapping[str, Any],
    item_features: ItemFeatures,
    moment: datetime,
    variant: str = DEFAULT_VARIANT,
) -> Scored:
    """Retrieval, item features and ranking for one user at `moment`, for a list of `variant`
    (which only a pair published per variant reads: `varies_by_variant`).

    Args:
        models: the model pair.
        user_id: the user.
        user: every user feature the reader serves (`<view>__<feature>`; None when missing).
        item_features: item feature columns for candidate ids.
        moment: what the recommendations are for (the request context).
        variant: the list's exclusions (`scoring.context.VARIANTS`).

    Raises:
        UnboundInputError: a signature input has no source.
    """
    ctx = request_context(moment, variant)
    retrieved = models.predict(
        RETRIEVAL, retrieval_inputs(models.specs(RETRIEVAL), user_id=user_id, user=user, ctx=ctx)
    )
    candidates = candidates_of(retrieved)
    items = item_features(candidates.ids)
    ranked = models.predict(
        RANKING,
        ranking_inputs(models.specs(RANKING), user_id=user_id, user=user, ctx=ctx, candidates=candidates, items=items),
    )
    served_by = ranked.get(RECOMMENDER)
    recommender = names(np.asarray(served_by).ravel()[:1])[0] if served_by is not None else None
    return Scored(user_id, user, candidates, items, np.asarray(ranked["scores"][0]), recommender)
