"""The feature repository as Feast reads it: every entity, source, view and service.

`feast plan` and `feast apply` import this file (the others are in .feastignore), and
`towerflow features` registers the same objects through it (jobs.feature_store.repo_contents).
"""

from feature_repo.entities import item, user
from feature_repo.services import ranking, retrieval
from feature_repo.sources import (
    item_embeddings_source,
    item_features_source,
    item_trending_push,
    user_embeddings_source,
    user_features_source,
    user_history_source,
    user_recent_push,
    user_seen_source,
)
from feature_repo.views import (
    item_embeddings,
    item_features,
    item_trending,
    user_embeddings,
    user_features,
    user_history,
    user_recent,
    user_seen,
)

__all__ = [
    "item",
    "item_embeddings",
    "item_embeddings_source",
    "item_features",
    "item_features_source",
    "item_trending",
    "item_trending_push",
    "ranking",
    "retrieval",
    "user",
    "user_embeddings",
    "user_embeddings_source",
    "user_features",
    "user_features_source",
    "user_history",
    "user_history_source",
    "user_recent",
    "user_recent_push",
    "user_seen",
    "user_seen_source",
]
