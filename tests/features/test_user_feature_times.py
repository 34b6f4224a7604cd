"""The fast reader says when a user's features became valid (each view's event time), from the
same read as the values: the Redis hash's `_ts:<view>` fields, or the SQLite store's rows."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from features.reader import FastFeatureReader, UserFeatures

pytestmark = pytest.mark.integration
USER_VIEWS = {"user_features", "user_recent", "user_history", "user_seen"}


def test_user_features_carry_each_views_event_time(store: Any, gold_home: Any, fx: Any) -> None:
    _, gold = gold_home
    reader = FastFeatureReader(store, "ranking")
    user = reader.user_features(gold.users[0])
    assert isinstance(user, UserFeatures)
    # The last materialized day's rows: valid from the end of that day.
    assert user.event_times == dict.fromkeys(USER_VIEWS, fx.end_of(gold).timestamp())
    assert dict(user) == {k: user[k] for k in reader.user_columns}  # still the plain columns
    assert reader.user_features("nobody").event_times == {}


def test_the_async_read_carries_them_too(redis_store: Any, gold_home: Any, fx: Any) -> None:
    _, gold = gold_home
    reader = FastFeatureReader(redis_store, "ranking")

    async def read() -> UserFeatures:
        try:
            # users[2]: test_feature_store.py pushes live values for users[1] into this session's store
            return await reader.user_features_async(gold.users[2])
        finally:
            await reader.aclose()

    user = asyncio.run(read())
    assert user.event_times == dict.fromkeys(USER_VIEWS, fx.end_of(gold).timestamp())
    assert user == reader.user_features(gold.users[2])
