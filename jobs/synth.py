"""A seeded generator of realistic retail behaviour, written as landing files one day at a time.

The world: a catalog with categories, prices, descriptions and creation dates (some items appear
during the period); users with latent tastes over categories, a few favourite items (re-purchases)
and sign-up dates; sessions with a view -> click -> add_to_cart -> purchase funnel whose rates rise
with the user's affinity for the item; item popularity that follows a power law and drifts day
to day; and a few bots with implausible rates (fast, regular, catalog-wide viewing, no purchases),
listed in `users.parquet` so tests can check the cleaning step finds them.

Each day is generated from its own random stream (`seed`, day), and only one day is in memory at a
time, so 10M events need no more memory than one day's worth. The same seed gives byte-identical
files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from towerflow.schemas import TIMESTAMP

CATEGORIES = {
    "kitchen": (["mug", "teapot", "plate", "bowl", "spoon set", "cake tin", "jar"], 12.0),
    "garden": (["plant pot", "watering can", "bird feeder", "trowel", "lantern"], 18.0),
    "toys": (["wooden train", "puzzle", "doll", "spinning top", "kite", "yo-yo"], 9.0),
    "stationery": (["notebook", "pencil case", "card", "wrapping paper", "stickers"], 4.0),
    "lighting": (["t-light holder", "fairy lights", "lamp", "candle", "night light"], 15.0),
    "bags": (["tote bag", "lunch bag", "shopping bag", "purse", "backpack"], 11.0),
    "decor": (["frame", "wall sign", "clock", "vase", "cushion cover", "doorstop"], 14.0),
    "party": (["bunting", "balloons", "party cups", "napkins", "paper plates"], 5.0),
    "christmas": (["bauble", "advent calendar", "wreath", "stocking", "tree topper"], 8.0),
    "bath": (["soap dish", "towel", "bath salts", "toothbrush holder", "sponge bag"], 10.0),
    "jewellery": (["necklace", "bracelet", "earrings", "ring box", "brooch"], 16.0),
    "baking": (["cupcake cases", "cookie cutter", "apron", "rolling pin", "piping set"], 7.0),
}
ADJECTIVES = [
    "vintage",
    "retro",
    "red",
    "blue",
    "pink",
    "green",
    "white",
    "spotty",
    "floral",
    "heart",
    "star",
    "regency",
    "woodland",
    "paisley",
    "polkadot",
    "gingham",
    "rustic",
]
ACTION_VIEW, ACTION_CLICK, ACTION_CART, ACTION_PURCHASE = "view", "click", "add_to_cart", "purchase"
SECONDS_PER_DAY = 86_400
# Share of sessions starting in each hour (UTC): quiet nights, a lunch bump, an evening peak.
HOURLY = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 6, 5.5, 5, 4.5, 4.5, 5, 6, 7, 7.5, 6, 4, 2],
    dtype=np.float64,
)


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic world.

    Args:
        users: number of users (bots included).
        items: number of catalog items.
        days: number of days of events.
        seed: random seed; the same seed gives the same files, byte for byte.
        start: first day of events (UTC).
        sessions_per_user_day: mean sessions per user per day (users vary around it).
        views_per_session: mean product views per session.
        bots: number of bot users; default 0.05% of users, at least 3.
    """

    users: int = 5_000
    items: int = 2_000
    days: int = 30
    seed: int = 42
    start: date = date(2025, 1, 1)
    sessions_per_user_day: float = 0.12
    views_per_session: float = 8.0
    bots: int | None = None

    @property
    def n_bots(self) -> int:
        return self.bots if self.bots is not None else max(3, self.users // 2000)


@dataclass
class World:
    """Everything fixed across days: the catalog and the users."""

    item_ids: np.ndarray  # [items] str
    item_category: np.ndarray  # [items] int
    item_price: np.ndarray  # [items] float
    item_created_day: np.ndarray  # [items] int, day index (negative: before the period)
    item_base_log_pop: np.ndarray  # [items] power-law log popularity
    item_quality: np.ndarray  # [items] how appealing once seen
    user_ids: np.ndarray  # [users] str
    user_taste_cdf: np.ndarray  # [users, categories] cumulative taste
    user_taste: np.ndarray  # [users, categories]
    user_activity: np.ndarray  # [users] mean sessions per day
    user_signup_day: np.ndarray  # [users] int
    user_favourites: np.ndarray  # [users, 4] item index
    is_bot: np.ndarray  # [users] bool


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def build_world(cfg: SynthConfig) -> World:
    """Draw the catalog and the users from the seed."""
    rng = _rng(cfg.seed, 0)
    n_cat = len(CATEGORIES)
    cat_names = list(CATEGORIES)
    base_price = np.array([CATEGORIES[c][1] for c in cat_names])
    cat_share = rng.dirichlet(np.full(n_cat, 4.0))
    item_category = rng.choice(n_cat, size=cfg.items, p=cat_share)
    item_price = np.round(base_price[item_category] * rng.lognormal(0.0, 0.5, cfg.items), 2)
    # Power law: a random rank per item, popularity ~ rank^-1.1.
    rank = rng.permutation(cfg.items) + 1
    item_base_log_pop = -1.1 * np.log(rank)
    item_quality = rng.normal(0.0, 0.5, cfg.items)
    # 80% of the catalog exists before the period; the rest arrives during it.
    new = rng.random(cfg.items) < 0.2
    item_created_day = np.where(new, rng.integers(0, max(cfg.days, 1), cfg.items), -rng.integers(1, 720, cfg.items))
    width = len(str(cfg.items))
    item_ids = np.array([f"I{i:0{width}d}" for i in range(cfg.items)])

    # Tastes: concentrated on a few categories.
    taste = rng.dirichlet(np.full(n_cat, 0.25), size=cfg.users)
    taste = 0.9 * taste + 0.1 * cat_share  # everyone browses a little of everything
    activity = cfg.sessions_per_user_day * rng.lognormal(-0.5, 1.0, cfg.users)
    signup = np.where(rng.random(cfg.users) < 0.85, -1, rng.integers(0, max(cfg.days, 1), cfg.users))
    is_bot = np.zeros(cfg.users, dtype=bool)
    is_bot[rng.choice(cfg.users, size=min(cfg.n_bots, cfg.users), replace=False)] = True
    uwidth = len(str(cfg.users))
    user_ids = np.array([f"U{u:0{uwidth}d}" for u in range(cfg.users)])
    world = World(
        item_ids=item_ids,
        item_category=item_category,
        item_price=item_price,
        item_created_day=item_created_day,
        item_base_log_pop=item_base_log_pop,
        item_quality=item_quality,
        user_ids=user_ids,
        user_taste_cdf=np.cumsum(taste, axis=1),
        user_taste=taste,
        user_activity=activity,
        user_signup_day=signup,
        user_favourites=np.zeros((cfg.users, 4), dtype=np.int64),
        is_bot=is_bot,
    )
    # Favourites: popular items from the user's preferred categories, bought again and again.
    pref_cat = _sample_categories(rng, world.user_taste_cdf, np.repeat(np.arange(cfg.users), 4))
    log_pop = np.where(item_created_day < 0, item_base_log_pop, -np.inf)
    world.user_favourites = _sample_items(rng, pref_cat, item_category, log_pop).reshape(-1, 4)
    return world


def _sample_categories(rng: np.random.Generator, cdf: np.ndarray, users: np.ndarray) -> np.ndarray:
    """One category per row, drawn from each user's taste (inverse CDF, vectorized)."""
    draws = rng.random(len(users))
    picks = (cdf[users] < draws[:, None]).sum(axis=1)
    return np.minimum(picks, cdf.shape[1] - 1)


def _sample_items(
    rng: np.random.Generator, categories: np.ndarray, item_category: np.ndarray, log_pop: np.ndarray
) -> np.ndarray:
    """One item per row within the row's category, proportional to exp(log_pop)."""
    out = np.empty(len(categories), dtype=np.int64)
    for cat in range(int(item_category.max()) + 1):
        rows = np.flatnonzero(categories == cat)
        if len(rows) == 0:
            continue
        members = np.flatnonzero(item_category == cat)
        weight = np.exp(log_pop[members] - log_pop[members].max()) if len(members) else members
        if len(members) == 0 or not np.isfinite(weight).any() or weight.sum() == 0:
            members = np.flatnonzero(np.isfinite(log_pop))  # empty category: anything live
            weight = np.exp(log_pop[members] - log_pop[members].max())
        cdf = np.cumsum(weight) / weight.sum()
        out[rows] = members[np.minimum(np.searchsorted(cdf, rng.random(len(rows))), len(members) - 1)]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def generate_day(cfg: SynthConfig, world: World, day: int, drift: np.ndarray) -> pa.Table:
    """All events of day `day` (0-based), sorted by time, as an Arrow table.

    Args:
        drift: [items] log-popularity drift accumulated up to this day.
    """
    rng = _rng(cfg.seed, 1, day)
    day_start = datetime.combine(cfg.start + timedelta(days=day), datetime.min.time(), UTC)
    live = world.item_created_day <= day
    # New items get a launch boost that fades over two weeks.
    age = day - world.item_created_day
    boost = np.where((world.item_created_day >= 0) & (age < 14), 1.5 * (1 - age / 14), 0.0)
    log_pop = np.where(live, world.item_base_log_pop + drift + boost, -np.inf)

    humans = np.flatnonzero(~world.is_bot & (world.user_signup_day <= day))
    n_sessions = rng.poisson(world.user_activity[humans])
    s_user = np.repeat(humans, n_sessions)
    hour = rng.choice(24, size=len(s_user), p=HOURLY / HOURLY.sum())
    s_start = hour * 3600 + rng.random(len(s_user)) * 3600
    n_views = rng.geometric(1.0 / cfg.views_per_session, len(s_user))
    v_session = np.repeat(np.arange(len(s_user)), n_views)
    v_user = s_user[v_session]
    # Within a session, views are spaced by ~40 s; the session cannot spill past midnight.
    gaps = rng.exponential(40.0, len(v_session))
    cum = np.cumsum(gaps)
    offset = cum - np.repeat(cum[np.cumsum(n_views) - n_views] if len(cum) else cum, n_views)
    v_time = np.minimum(s_start[v_session] + offset, SECONDS_PER_DAY - 60)

    # What is viewed: mostly the user's tastes, sometimes a favourite, sometimes anything popular.
    v_cat = _sample_categories(rng, world.user_taste_cdf, v_user)
    v_item = _sample_items(rng, v_cat, world.item_category, log_pop)
    favourite = rng.random(len(v_user)) < 0.12
    fav_pick = world.user_favourites[v_user, rng.integers(0, 4, len(v_user))]
    v_item = np.where(favourite & live[fav_pick], fav_pick, v_item)

    affinity = np.log(world.user_taste[v_user, world.item_category[v_item]] * 12 + 1e-3)
    appeal = affinity + world.item_quality[v_item] + np.where(favourite, 1.5, 0.0)
    clicked = rng.random(len(v_item)) < _sigmoid(-1.6 + 0.8 * appeal)
    carted = clicked & (rng.random(len(v_item)) < _sigmoid(-1.2 + 0.6 * appeal))
    bought = carted & (rng.random(len(v_item)) < _sigmoid(0.2 + 0.5 * appeal))
    quantity = 1 + rng.poisson(np.where(favourite, 2.0, 0.5), len(v_item))

    parts = [
        (v_user, v_item, v_time, ACTION_VIEW, 0),
        (
            v_user[clicked],
            v_item[clicked],
            v_time[clicked] + 2 + rng.exponential(5, clicked.sum()),
            ACTION_CLICK,
            1,
        ),
        (
            v_user[carted],
            v_item[carted],
            v_time[carted] + 10 + rng.exponential(20, carted.sum()),
            ACTION_CART,
            1,
        ),
    ]
    parts.append(
        (
            v_user[bought],
            v_item[bought],
            v_time[bought] + 40 + rng.exponential(60, bought.sum()),
            ACTION_PURCHASE,
            quantity[bought],
        )
    )
    parts.append(_bot_day(cfg, world, rng, live))

    users = np.concatenate([p[0] for p in parts])
    items = np.concatenate([p[1] for p in parts])
    seconds = np.minimum(np.concatenate([p[2] for p in parts]), SECONDS_PER_DAY - 1)
    actions = np.concatenate([np.full(len(p[0]), p[3], dtype=object) for p in parts])
    qty = np.concatenate([np.broadcast_to(np.asarray(p[4], dtype=np.int64), len(p[0])) for p in parts])
    micros = np.floor(seconds * 1e6).astype(np.int64)
    order = np.lexsort((items, users, micros))
    ts = int(day_start.timestamp() * 1e6) + micros[order]
    stamp = day_start.strftime("%Y%m%d")
    seq = np.arange(len(order))
    return pa.table(
        {
            "event_id": pa.array(np.char.add(f"s{cfg.seed}-{stamp}-", seq.astype(str))),
            "user_id": pa.array(world.user_ids[users[order]]),
            "item_id": pa.array(world.item_ids[items[order]]),
            "action": pa.array(actions[order].astype(str)),
            "timestamp": pa.array(ts, type=pa.int64()).cast(TIMESTAMP),
            "quantity": pa.array(qty[order]),
            "price": pa.array(world.item_price[items[order]]),
        }
    )


def _bot_day(cfg: SynthConfig, world: World, rng: np.random.Generator, live: np.ndarray):
    """Bots: a thousand views a day at a metronome's pace, across the whole catalog."""
    bots = np.flatnonzero(world.is_bot)
    per_bot = rng.integers(400, 1200, len(bots))
    b_user = np.repeat(bots, per_bot)
    live_items = np.flatnonzero(live)
    b_item = live_items[rng.integers(0, len(live_items), len(b_user))]
    starts = rng.uniform(0, 3600 * 6, len(bots))
    step = np.arange(len(b_user)) - np.repeat(np.cumsum(per_bot) - per_bot, per_bot)
    b_time = np.repeat(starts, per_bot) + step * 3.0  # one view every 3 s, no pauses
    return b_user, b_item, b_time, ACTION_VIEW, 0


def iter_days(cfg: SynthConfig, world: World) -> Iterator[tuple[date, pa.Table]]:
    """Yield (day, events) in order; popularity drift is a random walk carried across days."""
    drift = np.zeros(len(world.item_ids))
    for day in range(cfg.days):
        drift = 0.97 * drift + _rng(cfg.seed, 2, day).normal(0.0, 0.15, len(drift))
        yield cfg.start + timedelta(days=day), generate_day(cfg, world, day, drift)


def items_table(cfg: SynthConfig, world: World) -> pa.Table:
    names = list(CATEGORIES)
    rng = _rng(cfg.seed, 3)
    descriptions = []
    for cat, price in zip(world.item_category, world.item_price, strict=True):
        nouns = CATEGORIES[names[cat]][0]
        adj = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        noun = nouns[rng.integers(len(nouns))]
        size = "large " if price > 2 * CATEGORIES[names[cat]][1] else ""
        descriptions.append(f"{size}{adj} {noun}".upper())
    start = datetime.combine(cfg.start, datetime.min.time(), UTC)
    created_us = int(start.timestamp() * 1e6) + world.item_created_day.astype(np.int64) * SECONDS_PER_DAY * 10**6
    return pa.table(
        {
            "item_id": pa.array(world.item_ids),
            "description": pa.array(descriptions),
            "category": pa.array(np.array(names)[world.item_category]),
            "price": pa.array(world.item_price),
            "created_at": pa.array(created_us, type=pa.int64()).cast(TIMESTAMP),
            "available": pa.array(rng.random(len(world.item_ids)) > 0.02),
        }
    )


def users_table(cfg: SynthConfig, world: World) -> pa.Table:
    """Ground truth for tests and notebooks: who is a bot, and each user's favourite category."""
    names = np.array(list(CATEGORIES))
    return pa.table(
        {
            "user_id": pa.array(world.user_ids),
            "is_bot": pa.array(world.is_bot),
            "top_category": pa.array(names[world.user_taste.argmax(axis=1)]),
            "signup_day": pa.array(world.user_signup_day.astype(np.int64)),
        }
    )


@dataclass
class SynthResult:
    out_dir: Path
    items_path: Path
    users_path: Path
    day_paths: list[Path]
    events: int
    by_action: dict[str, int]


def write_landing(
    cfg: SynthConfig,
    out_dir: Path,
    on_day: Callable[[date, int], None] | None = None,
) -> SynthResult:
    """Write `items.parquet`, `users.parquet` and `events/event_date=YYYY-MM-DD/events.parquet`.

    Only one day of events is in memory at a time. Files are written to a temporary name and
    renamed, so a reader never sees a half-written file.
    """
    world = build_world(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    items_path, users_path = out_dir / "items.parquet", out_dir / "users.parquet"
    _write_atomic(items_table(cfg, world), items_path)
    _write_atomic(users_table(cfg, world), users_path)
    paths: list[Path] = []
    total = 0
    by_action: dict[str, int] = {}
    for day, events in iter_days(cfg, world):
        path = out_dir / "events" / f"event_date={day.isoformat()}" / "events.parquet"
        _write_atomic(events, path)
        paths.append(path)
        total += len(events)
        for row in events.group_by("action").aggregate([("action", "count")]).to_pylist():
            by_action[row["action"]] = by_action.get(row["action"], 0) + row["action_count"]
        if on_day:
            on_day(day, len(events))
    return SynthResult(out_dir, items_path, users_path, paths, total, by_action)


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
