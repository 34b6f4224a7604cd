"""Feature services: one per model, so training and serving ask for exactly the same features."""

from feast import FeatureService

from feature_repo.views import (
    item_embeddings,
    item_features,
    user_embeddings,
    user_features,
    user_recent,
)

retrieval = FeatureService(
    name="retrieval",
    features=[user_features, user_recent, item_features[["category", "price", "age_days"]]],
    description="Two-tower retrieval: query tower (user side), candidate tower (item attributes).",
)

ranking = FeatureService(
    name="ranking",
    features=[user_features, user_recent, user_embeddings, item_features, item_embeddings],
    description="Ranking over user x item features and the retrieval model's embeddings.",
)
