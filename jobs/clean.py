"""Silver: clean interactions and the current catalog, from bronze.

`silver/interactions` keeps one row per real event of a known item. Each row of the day's bronze
events is first *flagged* with the first cleaning rule that removes it (`removed_by`, null when
kept), so every rule's count is exact and the counts add up to bronze minus silver:

| rule                | removes                                                                  |
|---------------------|--------------------------------------------------------------------------|
| `duplicate_event`   | a second copy of an event id (replays); the first import wins            |
| `guest_user`        | events without a user (Online Retail guest checkouts)                    |
| `non_product`       | fees, postage, adjustments, vouchers (StockCodes POST, M, BANK CHARGES…)  |
| `unknown_item`      | items not in the silver catalog                                          |
| `non_positive_price`| lines with a price of zero or below (free samples, bad-debt adjustments)  |
| `bot_rate`          | every event of a user-day with more than `max_moments_per_day` distinct   |
|                     | event times (no person browses that much)                                |
| `bot_pattern`       | every event of a user-day whose gaps between event times are near        |
|                     | constant (std / mean < `max_gap_cv`, at least `min_gaps_for_pattern`)    |
| `repeated_event`    | exact repeats: same user, item, action, time, quantity and price         |

Rate and pattern rules count distinct event *times*: a retail invoice puts hundreds of lines on
one timestamp, which is one decision, not a burst of clicks.

Cancellations stay in silver as action `cancellation` with the cancelled quantity as a positive
number; feature and training jobs decide what they mean (they are not positives).

Kept events are sessionized per user: a gap of more than 30 minutes starts a new session. The
job processes one day at a time, so a session never spans midnight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame

#: Online Retail StockCodes that are not products (fees, postage, manual adjustments, vouchers).
NON_PRODUCT_PATTERN = r"(?i)^(POST|DOT|M|C2|D|S|B|CRUK|PADS|AMAZONFEE|BANK CHARGES|ADJUST\w*|TEST\w*)$|^gift_\d"

#: Category from description keywords where the source has none (Online Retail): each entry is
#: a category and the word starts that signal it, `|`-separated. First match wins, so themes
#: (christmas, party) come before objects (decor). Same names as the synthetic catalog's
#: categories; anything unmatched is `other`.
CATEGORY_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("christmas", "christmas|xmas|advent|santa|reindeer|snowflake|bauble|nativity|tree topper|stocking"),
    ("party", "party|bunting|balloon|birthday|napkins|paper plates|paper cups|straws"),
    ("baking", "baking|cake case|cupcake|cake ?stand|cookie cutter|pastry|rolling pin|piping|apron"),
    ("lighting", "light|lantern|candle|t-light|tealight|lamp"),
    ("bags", "bag|tote|purse|shopper|backpack|rucksack"),
    ("jewellery", "necklace|bracelet|earring|ring|brooch|charm|jewel"),
    ("bath", "bath|soap|towel|toothbrush|sponge|toilet|wash"),
    ("garden", "garden|plant|flower pot|watering|bird|trowel|seed|feeder"),
    (
        "toys",
        "toy|game|doll|puzzle|jigsaw|dominoes|spinning top|kite|yo-yo|skipping rope|train|soldier|playhouse|marbles",
    ),
    (
        "stationery",
        "card|notebook|pencil|pen|paper|wrap|sticker|envelope|calendar|book|stamp|tape|ribbon|tissue|chalk",
    ),
    (
        "kitchen",
        "mug|cup|teapot|tea|plate|bowl|jar|tin|kitchen|spoon|lunch box|bottle|cutlery|tray|jug"
        "|glass|coaster|egg|dish|pantry|recipe|cook|storage|picnic",
    ),
    (
        "decor",
        "frame|sign|clock|vase|cushion|doorstop|wall|hook|hanger|ornament|decoration|heart|mirror"
        "|hanging|wreath|garland|doormat|box|basket|chalkboard|magnet|quilt|blanket",
    ),
)
OTHER_CATEGORY = "other"

RULES = (
    "duplicate_event",
    "guest_user",
    "non_product",
    "unknown_item",
    "non_positive_price",
    "bot_rate",
    "bot_pattern",
    "repeated_event",
)


@dataclass(frozen=True)
class CleaningRules:
    """Thresholds of the bot and spam rules.

    Args:
        max_moments_per_day: distinct event times per user and day above which a user-day is a
            bot (synthetic bots make 400-1200, people about 10, retail buyers at most ~25).
        max_gap_cv: coefficient of variation (std / mean) of the gaps between a user-day's event
            times below which it is machine-regular.
        min_gaps_for_pattern: the pattern rule needs at least this many gaps.
        session_gap_minutes: inactivity that ends a session.
    """

    max_moments_per_day: int = 300
    max_gap_cv: float = 0.1
    min_gaps_for_pattern: int = 50
    session_gap_minutes: int = 30


def derive_category(description: Column) -> Column:
    """Keyword category of a description (case-insensitive, whole words or word starts)."""
    from pyspark.sql import functions as F

    text = F.lower(F.coalesce(description, F.lit("")))
    expr = None
    for category, words in CATEGORY_KEYWORDS:
        pattern = r"\b(" + words.replace("-", r"\-") + r")"
        cond = text.rlike(pattern)
        expr = F.when(cond, F.lit(category)) if expr is None else expr.when(cond, F.lit(category))
    if expr is None:
        raise ValueError("CATEGORY_KEYWORDS lists no categories")
    return expr.otherwise(F.lit(OTHER_CATEGORY))


def is_non_product(item_id: Column) -> Column:
    return item_id.rlike(NON_PRODUCT_PATTERN)


# ------------------------------------------------------------------------------------ silver/items


def transform_items(bronze_items: DataFrame) -> DataFrame:
    """bronze/items (every catalog row ever imported) -> the current catalog, one row per item.

    Each attribute is the item's latest value: from the newest row (by `updated_at`, then import
    order) that has one, so a file naming only some columns (`item_id,available`, a price list)
    changes those and keeps the rest. The category is the source's (lower-cased) where there is
    one, else derived from the description. Non-product StockCodes are not items. Availability
    no file ever stated means available.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    newest_first = Window.partitionBy("item_id").orderBy(
        F.col("updated_at").desc(), F.col("import_batch").desc(), F.col("source_row").desc()
    )
    every_row = newest_first.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)

    def latest(column: Column) -> Column:
        return F.first(column, ignorenulls=True).over(every_row)

    source_category = F.lower(F.trim(F.col("category")))
    merged = (
        bronze_items.where(~is_non_product(F.col("item_id")))
        .withColumn("_category", F.when(source_category != "", source_category))
        .select(
            "item_id",
            F.row_number().over(newest_first).alias("_rank"),
            latest(F.col("description")).alias("description"),
            latest(F.col("_category")).alias("_category"),
            latest(F.col("price")).alias("price"),
            latest(F.col("created_at")).alias("created_at"),
            latest(F.col("available")).alias("available"),
            "updated_at",
        )
        .where("_rank = 1")
    )
    return merged.select(
        "item_id",
        "description",
        F.coalesce(F.col("_category"), derive_category(F.col("description"))).alias("category"),
        "price",
        "created_at",
        F.coalesce(F.col("available"), F.lit(True)).alias("available"),
        "updated_at",
    )


# ----------------------------------------------------------------------------- silver/interactions


def flag_interactions(events: DataFrame, items: DataFrame, rules: CleaningRules = CleaningRules()) -> DataFrame:
    """Bronze events -> the same rows plus `removed_by`: the first rule that removes the row.

    Args:
        events: bronze events of the interval (BRONZE_EVENTS columns).
        items: the silver catalog (`item_id` is what is used).
        rules: bot and spam thresholds.

    Returns:
        The events with `removed_by` (null: kept) and, for kept rows, `session_id`.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Deterministic winner among copies of one event id: the earliest import of it. Ids are
    # counted first (one narrow column), so only the few repeated ids are sorted, not every row.
    repeated_ids = (
        events.groupBy("event_id").count().where("count > 1").select("event_id", F.lit(True).alias("_repeated"))
    )
    by_event = Window.partitionBy("event_id").orderBy("import_batch", "source_row")
    marked = events.join(repeated_ids, "event_id", "left")  # adaptive execution broadcasts the few ids
    copies = marked.where("_repeated").withColumn("_copy", F.row_number().over(by_event))
    singles = marked.where("_repeated IS NULL").withColumn("_copy", F.lit(1))
    known = items.select("item_id", F.lit(True).alias("_known")).distinct()
    flagged = (
        singles.unionByName(copies)
        .drop("_repeated")
        .join(F.broadcast(known), "item_id", "left")
        .withColumn(
            "removed_by",
            F.when(F.col("_copy") > 1, "duplicate_event")
            .when(F.col("user_id").isNull(), "guest_user")
            .when(is_non_product(F.col("item_id")), "non_product")
            .when(F.col("_known").isNull(), "unknown_item")
            .when(F.col("price") <= 0, "non_positive_price"),
        )
        .drop("_copy", "_known")
    )
    return _flag_per_user_day(flagged, rules)


def _flag_per_user_day(flagged: DataFrame, rules: CleaningRules) -> DataFrame:
    """One sort per user and day serves the repeat, rate and pattern rules and the sessions.

    Sorted by time and then the repeat key, exact repeats sit next to each other; they share a
    timestamp, so they change neither the gaps between distinct event times nor the sessions.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    # Rows already removed get a null owner: they touch no user's statistics. Within a time,
    # rows are ordered by a hash of the repeat key: equal keys are adjacent (and compared exactly
    # below), at the price of sorting one long instead of four columns. Each select holds all
    # the window expressions of one step, so Spark runs two Window operators over one sort
    # instead of one per column (10M rows: the sort and the windows were most of silver).
    frame = flagged.withColumn("_owner", F.when(F.col("removed_by").isNull(), F.col("user_id"))).withColumn(
        "_key", F.xxhash64("item_id", "action", "quantity", "price")
    )
    ordered = Window.partitionBy("_owner", "event_date").orderBy("timestamp", "_key", "event_id")
    whole = ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    seconds = F.col("timestamp").cast("double")
    same_as_previous = F.lit(True)
    for column in ("timestamp", "_key", "item_id", "action", "quantity", "price"):
        same_as_previous = same_as_previous & F.col(column).eqNullSafe(F.lag(column).over(ordered))
    frame = frame.select(
        "*",
        (seconds - F.lag(seconds).over(ordered)).alias("_gap"),
        F.coalesce(same_as_previous, F.lit(False)).alias("_repeat"),
    )
    moment_gap = F.when(F.col("_gap") > 0, F.col("_gap"))  # gaps between distinct event times
    new_session = F.coalesce(F.col("_gap") > rules.session_gap_minutes * 60, F.lit(True))
    frame = frame.select(
        "*",
        F.count(moment_gap).over(whole).alias("_gaps"),
        F.avg(moment_gap).over(whole).alias("_gap_mean"),
        F.stddev_pop(moment_gap).over(whole).alias("_gap_std"),
        F.sum(new_session.cast("int")).over(ordered).alias("_session"),
    )
    is_rate = (F.col("_gaps") + 1) > rules.max_moments_per_day
    is_pattern = (F.col("_gaps") >= rules.min_gaps_for_pattern) & (
        F.col("_gap_std") < rules.max_gap_cv * F.col("_gap_mean")
    )
    removed_by = (
        F.when(F.col("_owner").isNull(), F.col("removed_by"))
        .when(is_rate, "bot_rate")
        .when(is_pattern, "bot_pattern")
        .when(F.col("_repeat"), "repeated_event")
    )
    session_id = F.concat_ws(
        "-", F.col("user_id"), F.date_format("event_date", "yyyyMMdd"), F.col("_session").cast("string")
    )
    return (
        frame.withColumn("removed_by", removed_by)
        .withColumn("session_id", F.when(F.col("removed_by").isNull(), session_id))
        .drop("_owner", "_key", "_gap", "_repeat", "_gaps", "_gap_mean", "_gap_std", "_session")
    )


def kept_interactions(flagged: DataFrame) -> DataFrame:
    """Flagged events -> silver rows (SILVER_INTERACTIONS columns): kept rows, cancellations as
    positive quantities."""
    from pyspark.sql import functions as F

    return silver_columns(flagged).where(F.col("removed_by").isNull()).drop("removed_by")


def silver_columns(flagged: DataFrame) -> DataFrame:
    """Flagged events in silver's columns plus `removed_by`; cancellations as positive
    quantities. Lets a job collect once and take both the rule counts and the kept rows."""
    from pyspark.sql import functions as F

    quantity = F.when(F.col("action") == "cancellation", F.abs(F.col("quantity"))).otherwise(F.col("quantity"))
    return flagged.select(
        "event_id",
        "user_id",
        "item_id",
        "action",
        "timestamp",
        quantity.alias("quantity"),
        "price",
        "session_id",
        "source",
        "request_id",
        "event_date",
        "removed_by",
    )


def transform_interactions(events: DataFrame, items: DataFrame, rules: CleaningRules = CleaningRules()) -> DataFrame:
    """Bronze events of an interval -> silver interactions (SILVER_INTERACTIONS columns)."""
    return kept_interactions(flag_interactions(events, items, rules))


def removed_counts(flagged: DataFrame) -> dict[str, int]:
    """Rows removed per rule (every rule listed, zeros included) from a flagged frame."""
    counts = {row["removed_by"]: row["count"] for row in flagged.groupBy("removed_by").count().collect()}
    return {rule: int(counts.get(rule, 0)) for rule in RULES}


def removed_counts_by_day(flagged: pa.Table) -> dict[date, dict[str, int]]:
    """Rows removed per rule and day from a collected flagged table (days with removals only;
    every rule listed)."""
    import pyarrow.compute as pc

    per_day: dict[date, dict[str, int]] = {}
    removed = flagged.filter(pc.is_valid(flagged.column("removed_by")))
    for row in removed.group_by(["event_date", "removed_by"]).aggregate([("removed_by", "count")]).to_pylist():
        per_day.setdefault(row["event_date"], dict.fromkeys(RULES, 0))[row["removed_by"]] = row["removed_by_count"]
    return per_day
