"""Batch inference: the published models' recommendations for many users at once.

`precompute` scores the users active on a run's last day as `towerflow recommend` does (online
features, the gateway's binding, scoring and rules; `scoring.batch`) and writes the lists to Redis,
where the gateway serves them when the model path is down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from towerflow.lake import Lake

if TYPE_CHECKING:
    from towerflow.settings import Settings

log = logging.getLogger(__name__)


def precompute(
    settings: Settings,
    run_date: date,
    version: int,
    max_users: int = 50_000,
    progress: Callable[[str], None] = log.info,
) -> int:
    """Recommendations for the users active on the run's last day, from the published version,
    as `towerflow recommend` makes them (online features, the gateway's scoring and rules), into
    Redis: the gateway serves them when the model path is down. Needs Redis."""
    from dataclasses import replace

    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as ds

    from features.precomputed import write_precomputed
    from scoring.batch import MODEL_PATH, open_scorer, recommend_users
    from scoring.context import VARIANTS
    from scoring.rules import RuleConfig
    from scoring.twostage import varies_by_variant

    if not settings.redis_url:
        log.info("no Redis configured: precomputed recommendations are skipped (embedded mode)")
        return 0
    lake = Lake(settings.lake, settings.storage_options or None)
    at = datetime.combine(run_date, datetime.min.time(), UTC)
    last_day = run_date - timedelta(days=1)
    active = lake.read(
        lake.uri("gold", "user_features"),
        columns=["user_id"],
        filter=ds.field("feature_date") == pa.scalar(last_day, pa.date32()),
    )
    users = sorted(set(active.column("user_id").to_pylist()))[:max_users] if active is not None else []
    if not users:
        return 0
    scorer = open_scorer(settings, str(version))
    # The whole list, purchases kept: the gateway applies the request's rules when it serves it.
    # A pair that answers each list variant its own way gets each variant's list too.
    base = RuleConfig.from_settings(settings, count=100)
    wanted = VARIANTS if varies_by_variant(scorer.models) else {"all": VARIANTS["all"]}
    step = max(1, len(users) // 10)
    lists: dict[str, dict[str, list[str]]] = {}
    for variant, exclusions in wanted.items():

        def counted(n: int, variant: str = variant) -> None:
            if n % step == 0:
                progress(f"precomputed {n} of {len(users)} users ({variant})")

        answers = recommend_users(scorer, users, at, replace(base, **exclusions), progress=counted)
        lists[variant] = {a.user_id: [item for item, _ in a.items] for a in answers if a.path == MODEL_PATH}
    by_user = lists.pop("all")
    snapshot = scorer.reader.snapshot
    popularity = snapshot.column_arrays().get("item_features__popularity")
    popular = None
    if popularity is not None:
        ids = list(snapshot.index)  # in snapshot order; the arrays end with one slot for unknown ids
        order = np.argsort(-np.nan_to_num(popularity[: len(ids)], nan=-np.inf), kind="stable")[:200]
        popular = [ids[n] for n in order]
    return write_precomputed(
        settings.redis_url,
        by_user,
        f"retrieval={version},ranking={version}",
        prefix=settings.redis_prefix,
        ttl_s=settings.precomputed_ttl_s,
        generated_at=at,
        popular=popular,
        variants=lists,
    )
