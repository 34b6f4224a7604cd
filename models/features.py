"""Names of model inputs. They are the feature names the online store serves (`<view>__<feature>`),
so a SavedModel's signature tells the gateway which features to fetch, and nothing maps between."""

COUNTERS = ("views", "clicks", "carts", "purchases")
USER_NUMERIC = (
    *(f"user_features__{c}_{w}d" for c in COUNTERS for w in (7, 30)),
    "user_features__days_since_last_event",
    "user_features__days_since_last_purchase",
    "user_features__distinct_categories_30d",
    "user_features__avg_price_30d",
    *(f"user_recent__{c}_1d" for c in COUNTERS),
)
ITEM_NUMERIC = (
    *(f"item_features__{c}_{w}d" for c in COUNTERS for w in (7, 30)),
    "item_features__popularity",
    "item_features__ctr",
    "item_features__conversion",
    "item_features__age_days",
    "item_features__price",
)
USER_ID = "user_id"
ITEM_ID = "item_id"
RECENT_ITEMS = "user_recent__last_10_items"
FAVOURITE_CATEGORY = "user_features__favourite_category"
ITEM_CATEGORY = "item_features__category"
HISTORY_ITEMS = "user_history__items"
HISTORY_COUNTS = "user_history__counts"
HISTORY_LAST_DAY = "user_history__last_day"
RETRIEVAL_SCORE = "retrieval_score"
RETRIEVAL_RANK = "retrieval_rank"  # derived inside the ranking model from retrieval_score
#: Derived inside the ranking model: the candidate's ALS score for the user (folded in from the
#: purchase history), divided by the best in the user's list, and its 0-based rank there.
ALS_SCORE = "als_score"
ALS_RANK = "als_rank"
REQUEST_DAY = "request_day"  # days since the epoch of the moment recommendations are for
HOUR_OF_DAY = "hour_of_day"
DAY_OF_WEEK = "day_of_week"
# which exclusions the list is for (`scoring.context.VARIANTS`): a per-variant pair dispatches on it
LIST_VARIANT = "list_variant"
RECENT_LEN = 10
#: History items per user (most bought first): all of them are retrieval candidates and carry the
#: ranker's "bought before" features; the median Online Retail buyer has touched ~54 items.
HISTORY_LEN = 100
#: The head of the history that shapes the query embedding and the candidate-to-history
#: similarity: a longer tail diluted both and cost recall on items new to the user.
QUERY_HISTORY_LEN = 50
