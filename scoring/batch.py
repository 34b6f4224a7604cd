"""Score users offline as production would: the published models, the online features, the
gateway's binding, two-stage path and rules. `towerflow recommend` and the daily precompute.

    scorer = open_scorer(settings)            # stable versions + the online store
    answers = recommend_users(scorer, ["u1"], moment, RuleConfig.from_settings(settings))
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from scoring.catalog import Catalog
from scoring.context import variant_of
from scoring.local import SavedModelPair
from scoring.rules import RuleConfig
from scoring.twostage import RANKING, RETRIEVAL, check_sources, is_cold, popular_items, score, topped_up

log = logging.getLogger(__name__)
MODEL_PATH, POPULAR_PATH = "model", "fallback_popular"


@dataclass
class Scorer:
    """A model pair and the online feature reader it is fed from."""

    models: SavedModelPair
    reader: Any  # features.reader.FastFeatureReader
    versions: dict[str, int]

    def item_features(self, ids: Sequence[str]) -> Any:
        """As the gateway reads them: the in-memory snapshot when it answers, else the store."""
        found = self.reader.item_features_in_memory(ids)
        return found if found is not None else self.reader.item_features(ids)


@dataclass
class UserAnswer:
    """What production shows one user when the model path works.

    Attributes:
        path: `model`, or `fallback_popular` when the online store has no features for the user
            (a cold start: popular items, as the gateway serves).
        items: (item id, score), best first; a short model list is topped up with popular items,
            as the gateway does.
    """

    user_id: str
    path: str
    items: list[tuple[str, float]]
    recommender: str | None = None


def online_reader(settings: Any) -> Any:
    """The gateway's feature reader over the configured online store, item snapshot loaded."""
    from features.reader import FastFeatureReader
    from features.store import feature_store

    env = settings.feature_env
    if env == "auto":  # as the gateway: never an empty SQLite store because Redis blinked
        env = "redis" if settings.redis_url else "embedded"
    reader = FastFeatureReader(feature_store(settings, env), "ranking")
    reader.refresh()
    return reader


def version_dirs(models_dir: Path, label_or_version: str) -> tuple[dict[str, Path], dict[str, int]]:
    """The folders and versions of both models at a label (`stable`) or a version number.

    Raises:
        LookupError: nothing is published under it.
    """
    from models.registry import MODELS, labels

    versions = {}
    for model in MODELS:
        if label_or_version.isdigit():
            versions[model] = int(label_or_version)
        elif label_or_version in labels(models_dir, model):
            versions[model] = labels(models_dir, model)[label_or_version]
        else:
            raise LookupError(f"no {model} version is labelled {label_or_version!r} in {models_dir}: publish one first")
        if not (models_dir / model / str(versions[model])).is_dir():
            raise LookupError(f"{model} version {versions[model]} is not published in {models_dir}")
    return {m: models_dir / m / str(v) for m, v in versions.items()}, versions


def open_scorer(settings: Any, label_or_version: str = "stable", reader: Any = None) -> Scorer:
    """Load the published pair and open the online store, and check every signature input has a
    serving source (as the gateway does before it routes to a version).

    Raises:
        LookupError: no such version.
        UnboundInputError: a signature input the reader cannot serve.
    """
    dirs, versions = version_dirs(settings.models_dir, label_or_version)
    reader = reader if reader is not None else online_reader(settings)
    models = SavedModelPair(dirs)
    for model in (RETRIEVAL, RANKING):
        check_sources(model, versions[model], models.specs(model), reader.user_columns, reader.item_columns)
    return Scorer(models, reader, versions)


def recommend_users(
    scorer: Scorer,
    users: Iterable[str],
    moment: datetime,
    rules: RuleConfig,
    progress: Callable[[int], None] | None = None,
) -> list[UserAnswer]:
    """Each user's list at `moment` (the request context) under `rules`."""
    out = []
    popular = Catalog.from_snapshot(scorer.reader.snapshot, top=rules.popular_size)
    for n, user_id in enumerate(users, 1):
        user = scorer.reader.user_features(user_id)
        if is_cold(user):
            out.append(UserAnswer(user_id, POPULAR_PATH, popular_items(popular, user, rules)))
        else:
            scored = score(
                scorer.models,
                user_id=user_id,
                user=user,
                item_features=scorer.item_features,
                moment=moment,
                variant=variant_of(rules.exclude_purchased, rules.exclude_seen),
            )
            listed = topped_up(scored.ranked(rules), popular, user, rules)
            out.append(UserAnswer(user_id, MODEL_PATH, listed, scored.recommender))
        if progress is not None:
            progress(n)
    return out
