"""How long the holdout is (jobs.gold.choose_cutoff): at least its days, longer until each
evaluation variant has enough users and the holdout enough positives, never past half the data."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from jobs.gold import HoldoutSize, choose_cutoff

END = date(2025, 3, 31)
FIRST_DAY = END - timedelta(days=99)


def users(*rows: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Users from (first, last, last_new), each as days before END."""
    columns = zip(*rows, strict=True) if rows else ((), (), ())
    return {
        name: np.array([np.datetime64(END - timedelta(days=n)) for n in values], dtype="datetime64[D]")
        for name, values in zip(("first", "last", "last_new"), columns, strict=True)
    }


def test_a_holdout_that_holds_enough_keeps_its_days() -> None:
    crowd = users(*[(40, 0, 0)] * 5)
    cutoff, held = choose_cutoff(crowd, {END: 10}, FIRST_DAY, END, HoldoutSize(min_days=7, min_users=5, min_events=10))
    assert cutoff == END - timedelta(days=6)
    assert held == {"days": 7, "users_all": 5, "users_new": 5, "events": 10}


def test_the_holdout_grows_until_every_variant_has_its_users() -> None:
    # Five users buy something in the last 3 days, but three only re-buy: `new` has two there.
    # Three more users choose something new 9 days before the end.
    crowd = users(*[(60, 1, 1)] * 2, *[(60, 2, 30)] * 3, *[(60, 9, 9)] * 3)
    per_day = {END - timedelta(days=n): 4 for n in range(12)}
    size = HoldoutSize(min_days=3, min_users=5, min_events=0, max_days=28)
    cutoff, held = choose_cutoff(crowd, per_day, FIRST_DAY, END, size)
    assert cutoff == END - timedelta(days=9)  # the first length whose `new` variant has 5 users
    assert held == {"days": 10, "users_all": 8, "users_new": 5, "events": 40}


def test_the_holdout_grows_for_events_too() -> None:
    crowd = users(*[(60, 0, 0)] * 10)
    per_day = {END - timedelta(days=n): 3 for n in (0, 4, 8)}
    cutoff, held = choose_cutoff(crowd, per_day, FIRST_DAY, END, HoldoutSize(min_days=2, min_users=1, min_events=9))
    assert held["days"] == 9 and held["events"] == 9 and cutoff == END - timedelta(days=8)


def test_users_who_start_inside_the_holdout_do_not_count() -> None:
    # First choice 2 days before the end: no history before a cutoff 7 days back.
    crowd = users(*[(2, 0, 0)] * 10)
    _, held = choose_cutoff(crowd, {END: 10}, FIRST_DAY, END, HoldoutSize(min_days=7, min_users=1, max_days=7))
    assert held["users_all"] == held["users_new"] == 0


def test_the_holdout_stops_at_its_longest_and_at_half_the_data() -> None:
    few = users((60, 0, 0))
    size = HoldoutSize(min_days=3, min_users=50, min_events=0, max_days=28)
    _, held = choose_cutoff(few, {END: 1}, FIRST_DAY, END, size)
    assert held["days"] == 28
    short_data = END - timedelta(days=19)  # 20 days of data: at most 10 held out
    _, held = choose_cutoff(few, {END: 1}, short_data, END, size)
    assert held["days"] == 10
    tiny = END - timedelta(days=3)  # too little data for even the minimum: the minimum stands
    _, held = choose_cutoff(few, {END: 1}, tiny, END, size)
    assert held["days"] == 3
