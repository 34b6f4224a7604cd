"""Feature services: one per model, so training and serving ask for exactly the same features."""

from feast import FeatureService

from feature_repo.views import item_features, user_features, user_history, user_recent, user_seen

retrieval = FeatureService(
    name="retrieval",
    features=[user_features, user_recent, user_history, item_features[["category", "price", "age_days"]]],
    description="Two-tower retrieval: query tower (user side), candidate tower (item attributes).",
)

# All of item_features, `available` included, and user_seen: the gateway reads its features
# through this service, and its rules drop unavailable and seen items. The ranking model's
# signature takes neither.
ranking = FeatureService(
    name="ranking",
    features=[user_features, user_recent, user_history, user_seen, item_features],
    description="Ranking over user x item features and the user's purchase history.",
)
