"""A seeded generator of realistic user behaviour, written as landing files one day at a time.

The world: a catalog with categories, prices, descriptions and creation dates (some items appear
during the period); users with latent tastes over categories, a few favourite items (re-purchases)
and sign-up dates; sessions with a view -> click -> add_to_cart -> purchase funnel whose rates rise
with the user's affinity for the item; item popularity that follows a power law and drifts day
to day; and a few bots with implausible rates (fast, regular, catalog-wide viewing, no purchases),
listed in `users.parquet` so tests can check the cleaning step finds them.

A `Profile` gives that world a shape (`PROFILES`):

- `retail`: the world above, a few thousand events a day (the default).
- `media`: a catalog of titles in genres, consumed like ratings: a user acts on a title once
  (view, click, or `purchase` meaning watched), never again; a few hundred events a day; no bots.
- `sparse`: a small shop: tens of events a day from a handful of users, with quiet days of zero
  or a handful of events; no bots.

Each day is generated from its own random stream (`seed`, day), and only one day is in memory at a
time, so 10M events need no more memory than one day's worth (a profile without repeats also keeps
the set of (user, item) pairs acted on so far). The same seed gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypedDict

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
GENRES = {
    "drama": (["river", "letter", "winter", "promise", "house", "daughter"], 3.99),
    "comedy": (["wedding", "holiday", "neighbours", "road trip", "roommate"], 3.49),
    "thriller": (["witness", "signal", "tunnel", "escape", "alibi"], 3.99),
    "documentary": (["ocean", "planet", "harvest", "machine", "summit"], 2.99),
    "sci-fi": (["orbit", "colony", "android", "horizon", "frontier"], 4.49),
    "animation": (["dragon", "robot", "forest", "kingdom", "balloon"], 3.49),
    "horror": (["cellar", "mask", "hollow", "visitor", "island"], 2.99),
    "romance": (["summer", "letters", "garden", "vineyard", "harbour"], 3.49),
    "crime": (["heist", "syndicate", "detective", "docks", "ledger"], 3.99),
    "family": (["puppy", "treehouse", "camp", "snow day", "circus"], 2.99),
}
TITLE_WORDS = [
    "silent",
    "last",
    "golden",
    "broken",
    "hidden",
    "long",
    "little",
    "midnight",
    "second",
    "wild",
    "lost",
    "bright",
    "northern",
    "secret",
    "paper",
    "distant",
]
ACTION_VIEW, ACTION_CLICK, ACTION_CART, ACTION_PURCHASE = "view", "click", "add_to_cart", "purchase"
FUNNEL = (ACTION_VIEW, ACTION_CLICK, ACTION_CART, ACTION_PURCHASE)  # deepest step last
SECONDS_PER_DAY = 86_400
# Share of sessions starting in each hour (UTC): quiet nights, a lunch bump, an evening peak.
HOURLY = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 6, 5.5, 5, 4.5, 4.5, 5, 6, 7, 7.5, 6, 4, 2],
    dtype=np.float64,
)


class Volumes(TypedDict, total=False):
    """The `SynthConfig` fields a profile may set (its volumes)."""

    users: int
    items: int
    sessions_per_user_day: float
    views_per_session: float
    bots: int | None


@dataclass(frozen=True)
class Profile:
    """A shape of data: what the catalog holds, how people consume it, and how much of it.

    Args:
        name: the `--profile` value.
        categories: category -> (nouns for item titles, typical price).
        adjectives: words that start item titles.
        title: an item's description from `{size}` ("large " for pricey items), `{adj}`, `{noun}`.
        cart: the funnel has an add_to_cart step; without it, purchases follow clicks.
        engagement: added to every view's appeal: higher, more clicks and purchases per view.
        favourite_share: share of views that go to one of the user's favourite items (repeat
            purchases); 0: none.
        basket: mean extra units per purchase (a favourite's purchase adds 2).
        repeats: a user may act on an item more than once. Without repeats each (user, item) pair
            appears once in the whole data set, as the deepest funnel step reached (ratings-like).
        quiet_days: share of days on which only `quiet_scale` of the usual activity happens.
        quiet_scale: activity on a quiet day, relative to a usual day.
        defaults: `SynthConfig` fields this profile sets (volumes), see `SynthConfig.of`.
    """

    name: str
    categories: dict[str, tuple[list[str], float]]
    adjectives: list[str]
    title: str = "{size}{adj} {noun}"
    cart: bool = True
    engagement: float = 0.0
    favourite_share: float = 0.12
    basket: float = 0.5
    repeats: bool = True
    quiet_days: float = 0.0
    quiet_scale: float = 1.0
    defaults: Volumes = field(default_factory=Volumes)


PROFILES = {
    profile.name: profile
    for profile in (
        Profile("retail", CATEGORIES, ADJECTIVES),
        Profile(
            "media",
            GENRES,
            TITLE_WORDS,
            title="the {adj} {noun}",
            cart=False,
            engagement=1.0,
            favourite_share=0.0,
            basket=0.0,
            repeats=False,
            defaults={
                "users": 3_000,
                "items": 1_500,
                "sessions_per_user_day": 0.04,
                "views_per_session": 3.0,
                "bots": 0,
            },
        ),
        Profile(
            "sparse",
            CATEGORIES,
            ADJECTIVES,
            quiet_days=0.3,
            quiet_scale=0.1,
            defaults={"users": 400, "items": 300, "sessions_per_user_day": 0.015, "views_per_session": 4.0, "bots": 0},
        ),
    )
}


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic world. The field defaults are the `retail` profile's volumes; use
    `SynthConfig.of` for another profile's.

    Args:
        users: number of users (bots included).
        items: number of catalog items.
        days: number of days of events.
        seed: random seed; the same seed gives the same files, byte for byte.
        start: first day of events (UTC).
        sessions_per_user_day: mean sessions per user per day (users vary around it).
        views_per_session: mean product views per session.
        bots: number of bot users; default 0.05% of users, at least 3.
        profile: the shape of the data, a key of `PROFILES`.

    Raises:
        ValueError: an unknown profile.
    """

    users: int = 5_000
    items: int = 2_000
    days: int = 30
    seed: int = 42
    start: date = date(2025, 1, 1)
    sessions_per_user_day: float = 0.12
    views_per_session: float = 8.0
    bots: int | None = None
    profile: str = "retail"

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown synth profile {self.profile!r}; choose from {', '.join(PROFILES)}")

    @classmethod
    def of(
        cls,
        profile: str = "retail",
        *,
        users: int | None = None,
        items: int | None = None,
        days: int | None = None,
        seed: int | None = None,
        start: date | None = None,
        sessions_per_user_day: float | None = None,
        views_per_session: float | None = None,
        bots: int | None = None,
    ) -> SynthConfig:
        """The config of `profile`: its volumes, then the knobs given (not None).

        Raises:
            ValueError: an unknown profile.
        """
        base = replace(cls(profile=profile), **PROFILES[profile].defaults)
        return replace(
            base,
            users=base.users if users is None else users,
            items=base.items if items is None else items,
            days=base.days if days is None else days,
            seed=base.seed if seed is None else seed,
            start=base.start if start is None else start,
            sessions_per_user_day=base.sessions_per_user_day
            if sessions_per_user_day is None
            else sessions_per_user_day,
            views_per_session=base.views_per_session if views_per_session is None else views_per_session,
            bots=base.bots if bots is None else bots,
        )

    @property
    def shape(self) -> Profile:
        return PROFILES[self.profile]

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
    categories = cfg.shape.categories
    n_cat = len(categories)
    cat_names = list(categories)
    base_price = np.array([categories[c][1] for c in cat_names])
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


def generate_day(cfg: SynthConfig, world: World, day: int, drift: np.ndarray, seen: set[int] | None = None) -> pa.Table:
    """All events of day `day` (0-based), sorted by time, as an Arrow table.

    Args:
        drift: [items] log-popularity drift accumulated up to this day.
        seen: for a profile without repeats, the (user, item) pairs acted on before this day, as
            `user * items + item`; updated in place. None: none before this day.
    """
    shape = cfg.shape
    rng = _rng(cfg.seed, 1, day)
    day_start = datetime.combine(cfg.start + timedelta(days=day), datetime.min.time(), UTC)
    live = world.item_created_day <= day
    # New items get a launch boost that fades over two weeks.
    age = day - world.item_created_day
    boost = np.where((world.item_created_day >= 0) & (age < 14), 1.5 * (1 - age / 14), 0.0)
    log_pop = np.where(live, world.item_base_log_pop + drift + boost, -np.inf)

    humans = np.flatnonzero(~world.is_bot & (world.user_signup_day <= day))
    n_sessions = rng.poisson(world.user_activity[humans] * _day_activity(cfg, day))
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
    favourite = rng.random(len(v_user)) < shape.favourite_share
    fav_pick = world.user_favourites[v_user, rng.integers(0, 4, len(v_user))]
    v_item = np.where(favourite & live[fav_pick], fav_pick, v_item)

    affinity = np.log(world.user_taste[v_user, world.item_category[v_item]] * 12 + 1e-3)
    appeal = affinity + world.item_quality[v_item] + np.where(favourite, 1.5, 0.0) + shape.engagement
    clicked = rng.random(len(v_item)) < _sigmoid(-1.6 + 0.8 * appeal)
    carted = clicked & (rng.random(len(v_item)) < _sigmoid(-1.2 + 0.6 * appeal))
    bought = (carted if shape.cart else clicked) & (rng.random(len(v_item)) < _sigmoid(0.2 + 0.5 * appeal))
    quantity = 1 + rng.poisson(np.where(favourite, 2.0, shape.basket), len(v_item))

    # (users, items, seconds, action, quantity: one for all rows or one per row) per funnel step
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, str, int | np.ndarray]] = [
        (v_user, v_item, v_time, ACTION_VIEW, 0),
        (
            v_user[clicked],
            v_item[clicked],
            v_time[clicked] + 2 + rng.exponential(5, clicked.sum()),
            ACTION_CLICK,
            1,
        ),
    ]
    if shape.cart:
        parts.append(
            (
                v_user[carted],
                v_item[carted],
                v_time[carted] + 10 + rng.exponential(20, carted.sum()),
                ACTION_CART,
                1,
            )
        )
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
    if not shape.repeats:
        depth = np.concatenate([np.full(len(p[0]), FUNNEL.index(p[3])) for p in parts])
        keep = _first_encounters(users.astype(np.int64) * len(world.item_ids) + items, depth, seen)
        users, items, seconds, actions, qty = users[keep], items[keep], seconds[keep], actions[keep], qty[keep]
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


def _day_activity(cfg: SynthConfig, day: int) -> float:
    """Activity of day `day` relative to a usual day: `quiet_scale` on the profile's quiet days."""
    shape = cfg.shape
    if shape.quiet_days <= 0:
        return 1.0
    return shape.quiet_scale if _rng(cfg.seed, 4, day).random() < shape.quiet_days else 1.0


def _first_encounters(pairs: np.ndarray, depth: np.ndarray, seen: set[int] | None) -> np.ndarray:
    """Rows to keep so that each pair appears once: its deepest step, and only if not in `seen`
    (then added to it).

    Args:
        pairs: [events] user * items + item.
        depth: [events] funnel step (index in FUNNEL).
    """
    order = np.lexsort((-depth, pairs))  # by pair, deepest step first
    first = order[np.r_[True, pairs[order][1:] != pairs[order][:-1]]] if len(order) else order
    if seen:
        first = first[~np.isin(pairs[first], np.fromiter(seen, dtype=np.int64, count=len(seen)))]
    if seen is not None:
        seen.update(pairs[first].tolist())
    return np.sort(first)


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
    seen: set[int] = set()  # pairs acted on, for a profile without repeats
    for day in range(cfg.days):
        drift = 0.97 * drift + _rng(cfg.seed, 2, day).normal(0.0, 0.15, len(drift))
        yield cfg.start + timedelta(days=day), generate_day(cfg, world, day, drift, seen)


def items_table(cfg: SynthConfig, world: World) -> pa.Table:
    shape = cfg.shape
    categories, adjectives = shape.categories, shape.adjectives
    names = list(categories)
    rng = _rng(cfg.seed, 3)
    descriptions = []
    for cat, price in zip(world.item_category, world.item_price, strict=True):
        nouns = categories[names[cat]][0]
        adj = adjectives[rng.integers(len(adjectives))]
        noun = nouns[rng.integers(len(nouns))]
        size = "large " if price > 2 * categories[names[cat]][1] else ""
        descriptions.append(shape.title.format(size=size, adj=adj, noun=noun).upper())
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
    names = np.array(list(cfg.shape.categories))
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
