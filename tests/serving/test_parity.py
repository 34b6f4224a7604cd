"""What is served is what was evaluated: after the session's small pipeline run, at the moment
the features were materialized for, 200 users' lists from offline evaluation's scoring (Feast's
point-in-time features), from `towerflow recommend` (the online store, in process) and from the
running gateway (the online store, the model server over gRPC) are the same items in the same
order, with the same scores, for every exclusion setting (purchases kept, purchases out, everything
seen out). A blanked input (one without a serving source), the bug this guards against, makes
the lists differ."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest

from models.features import RECENT_ITEMS, REQUEST_DAY

pytestmark = [pytest.mark.integration, pytest.mark.training, pytest.mark.slow]
USERS = 200
COUNT = 10
#: The run date: the daily run materialized features up to it, and the holdout of later
#: days is not in the online store, so both sides see the same features.
MOMENT = datetime(2025, 1, 22, tzinfo=UTC)
#: The gateway's exclusions per case, and the `towerflow recommend` flags that ask for them.
SETTINGS = {
    "exclude": {"exclude_purchased": True, "exclude_seen": False},
    "keep": {"exclude_purchased": False, "exclude_seen": False},
    "unseen": {"exclude_purchased": True, "exclude_seen": True},
}
FLAGS = {"exclude": ["--exclude-purchased"], "keep": ["--no-exclude-purchased"], "unseen": ["--exclude-seen"]}
TOLERANCE = 1e-4

Lists = dict[str, dict[str, list[tuple[str, float]]]]  # case -> user -> [(item, score)]


@dataclass
class Parity:
    users: list[str]
    offline: Lists
    cli: Lists
    gateway: Lists
    paths: dict[str, set[str]]
    blanked: dict[str, Lists]  # BLANKED's cases: the offline lists with that input blanked


class BlankedInput:
    """The models with one input blanked (zeros, or "" for ids) where `model` reads it: how the
    gateway would score if that input had no serving source."""

    def __init__(self, models, name: str, model: str | None = None) -> None:
        self.models, self.name, self.model = models, name, model

    def specs(self, model: str):
        return self.models.specs(model)

    def predict(self, model: str, inputs):
        if self.name in inputs and self.model in (None, model):
            value = np.asarray(inputs[self.name])
            blank = np.full_like(value, "") if value.dtype.kind in "OSU" else np.zeros_like(value)
            inputs = {**inputs, self.name: blank}
        return self.models.predict(model, inputs)


#: Inputs whose loss the comparison must see: `request_day` (the served ranker's old input, fed as
#: zeros before it had a source) and the ranker's reading of the latest items.
BLANKED = {"request_day": (REQUEST_DAY, None), "ranker_recent_items": (RECENT_ITEMS, "ranking")}


def _offline(settings, lake, users: list[str], models) -> Lists:
    """Offline evaluation's scoring (`EvalData.scored`) at MOMENT, point-in-time features."""
    from features.store import feature_store
    from models.data import load_catalog
    from models.evaluate import features_at
    from models.lookup import FeastLookup
    from scoring.context import variant_of
    from scoring.rules import RuleConfig

    data = features_at(FeastLookup(feature_store(settings)), load_catalog(lake), users, MOMENT)
    rules = RuleConfig.from_settings(settings, count=COUNT)
    out: Lists = {case: {} for case in SETTINGS}
    for row, user in enumerate(data.users):
        by_variant = data.scored_variants(models, row)  # as served_lists scores a user
        for case, exclusions in SETTINGS.items():
            scored = by_variant[variant_of(**exclusions)]
            out[case][str(user)] = scored.ranked(replace(rules, **exclusions))
    return out


def _cli(env: dict[str, str], users: list[str]) -> Lists:
    out: Lists = {}
    for case in SETTINGS:
        args = [sys.executable, "-m", "towerflow.cli", "recommend", "--json", "--at", MOMENT.isoformat()]
        args += ["--count", str(COUNT), *FLAGS[case]]
        args += [part for user in users for part in ("--user", user)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        body = json.loads(done.stdout)
        assert all(u["path"] == "model" for u in body["users"]), [u for u in body["users"] if u["path"] != "model"]
        out[case] = {u["user_id"]: [(i["item_id"], i["score"]) for i in u["items"]] for u in body["users"]}
    return out


def _gateway(
    env: dict[str, str], users: list[str], port: int
) -> tuple[Lists, dict[str, set[str]], dict[str, set[str | None]]]:
    """Each case's lists, the paths that served them, and what `model_versions.recommender` said."""
    token = (
        subprocess.run(
            [sys.executable, "-m", "towerflow.cli", "token", "--user", "parity"]
            + ["--scopes", "recommend:read recommend:any recommend:admin"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    headers = {"Authorization": f"Bearer {token}", "X-Request-Time": MOMENT.isoformat()}
    out: Lists = {case: {} for case in SETTINGS}
    paths: dict[str, set[str]] = {case: set() for case in SETTINGS}
    served_by: dict[str, set[str | None]] = {case: set() for case in SETTINGS}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
        for case, exclusions in SETTINGS.items():
            for user in users:
                answer = client.get(
                    "/v1/recommendations",
                    params={"user_id": user, "count": COUNT, **{k: str(v).lower() for k, v in exclusions.items()}},
                )
                assert answer.status_code == 200, answer.text
                body = answer.json()
                paths[case].add(f"{body['path']}:{body.get('reason')}")
                served_by[case].add(body["model_versions"].get("recommender"))
                out[case][user] = [(i["item_id"], i["score"]) for i in body["items"]]
    return out, paths, served_by


def _serving_env(home, port: int, model_port: int) -> dict[str, str]:
    """The environment of `towerflow serve` (and the CLI) for a home."""
    env = {
        **os.environ,
        "TOWERFLOW_HOME": str(home),
        "TOWERFLOW_GATEWAY_PORT": str(port),
        "TOWERFLOW_MODEL_SERVER_PORT": str(model_port),
        "TOWERFLOW_MODEL_SERVER_TARGET": f"127.0.0.1:{model_port}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # Parity, not latency: budgets no busy CI machine misses, so every answer is the model path.
        "TOWERFLOW_RETRIEVAL_TIMEOUT_MS": "20000",
        "TOWERFLOW_RANKING_TIMEOUT_MS": "20000",
        "TOWERFLOW_FEATURES_TIMEOUT_MS": "20000",
    }
    for name in ("REDIS_URL", "TOWERFLOW_REDIS_URL"):  # the world's online store is the embedded one
        env.pop(name, None)
    return env


def _start_serving(env: dict[str, str], port: int, model_port: int) -> subprocess.Popen:
    """`towerflow serve` with its output in a file under the home (a pipe nobody reads would
    stall the processes once full)."""
    cmd = [sys.executable, "-m", "towerflow.cli", "serve", "--port", str(port), "--model-port", str(model_port)]
    log = Path(env["TOWERFLOW_HOME"]) / f"serve-{port}.log"
    with log.open("ab") as out:
        serve = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert serve.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return serve
        except httpx.HTTPError:
            pass
        time.sleep(1)
    serve.send_signal(signal.SIGTERM)
    raise AssertionError("the gateway did not become ready within 240 s")


@pytest.fixture(scope="module")
def parity(daily_world, gw) -> Parity:
    from models.registry import labelled_dirs
    from scoring.batch import online_reader
    from scoring.local import SavedModelPair

    settings, lake = daily_world.settings, daily_world.lake
    reader = online_reader(settings)
    known = sorted(set(lake.read(lake.uri("gold", "user_features"), columns=["user_id"]).column(0).to_pylist()))
    users = [u for u in known if any(v is not None for v in reader.user_features(u).values())][:USERS]
    assert len(users) == USERS, f"only {len(users)} users have online features"
    models = SavedModelPair(labelled_dirs(settings.models_dir, "stable"))

    port, model_port = gw.free_port(), gw.free_port()
    env = _serving_env(settings.home_dir, port, model_port)
    serve = _start_serving(env, port, model_port)
    try:
        gateway, paths, _ = _gateway(env, users, port)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    return Parity(
        users=users,
        offline=_offline(settings, lake, users, models),
        cli=_cli(env, users),
        gateway=gateway,
        paths=paths,
        blanked={case: _offline(settings, lake, users, BlankedInput(models, *what)) for case, what in BLANKED.items()},
    )


#: A pair published per variant (what the gate publishes when the variants choose differently):
#: the trained two-stage pair keeps purchases, its retrieval model alone drops them, ALS drops
#: everything seen.
PER_VARIANT = {"all": "two_stage", "new": "retrieval", "unseen": "als"}
CASE_OF = {"keep": "all", "exclude": "new", "unseen": "unseen"}


@dataclass
class PerVariantParity:
    users: list[str]
    offline: Lists
    gateway: Lists
    paths: dict[str, set[str]]
    served_by: dict[str, set[str | None]]  # the answers' `model_versions.recommender`
    alone: Lists  # each case's list from its variant's pair alone
    home: Path  # the home copy the pair is published in (version 1)


@pytest.fixture(scope="module")
def per_variant(daily_world, parity: Parity, gw, tmp_path_factory: pytest.TempPathFactory) -> PerVariantParity:
    """The comparison above for a per-variant pair, published as the only version of a copy of
    the daily home (the session's own registry is left as the other tests expect it)."""
    import shutil

    from models.lifecycle import chosen_dirs
    from models.registry import labelled_dirs, publish
    from models.runs import RunPaths
    from scoring.local import SavedModelPair
    from towerflow.settings import Settings

    source = daily_world.settings
    home = tmp_path_factory.mktemp("per_variant") / "home"
    shutil.copytree(source.home_dir, home, ignore=shutil.ignore_patterns("airflow", "runs", "models", "staging"))
    settings = Settings(home=home)
    run = RunPaths(source.home_dir / "runs" / daily_world.run_date)
    publish(settings.models_dir, chosen_dirs(run, "per_variant", PER_VARIANT), {"recommender": "per_variant"})
    models = SavedModelPair(labelled_dirs(settings.models_dir, "stable"))
    port, model_port = gw.free_port(), gw.free_port()
    env = _serving_env(home, port, model_port)
    serve = _start_serving(env, port, model_port)
    try:
        gateway, paths, served_by = _gateway(env, parity.users, port)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    offline = _offline(settings, daily_world.lake, parity.users, models)
    # Each part alone, scored as evaluation scores it: what each variant's list must be.
    alone: Lists = {}
    for case, variant in CASE_OF.items():
        part = SavedModelPair(chosen_dirs(run, PER_VARIANT[variant]))
        alone[case] = _offline(settings, daily_world.lake, parity.users, part)[case]
    return PerVariantParity(parity.users, offline, gateway, paths, served_by, alone, home)


def _same(a: Lists, b: Lists, case: str, users: list[str]) -> list[str]:
    """Users whose lists differ in items, order or scores (beyond TOLERANCE)."""
    differ = []
    for user in users:
        left, right = a[case][user], b[case][user]
        if [i for i, _ in left] != [i for i, _ in right] or not np.allclose(
            [s for _, s in left], [s for _, s in right], atol=TOLERANCE, rtol=0
        ):
            differ.append(user)
    return differ


@pytest.mark.parametrize("case", list(SETTINGS))
def test_evaluation_recommend_and_the_gateway_give_the_same_lists(parity: Parity, case: str) -> None:
    assert parity.paths[case] == {"model:None"}, parity.paths[case]
    for user in parity.users:
        assert len(parity.gateway[case][user]) == COUNT
    for other, name in ((parity.cli, "towerflow recommend"), (parity.gateway, "the gateway")):
        differ = _same(parity.offline, other, case, parity.users)
        example = differ[:1] and (parity.offline[case][differ[0]], other[case][differ[0]])
        assert not differ, f"{name} differs from evaluation for {len(differ)} users, e.g. {differ[:1]}: {example}"


@pytest.mark.parametrize("case", list(SETTINGS))
def test_a_per_variant_pair_serves_each_variant_as_evaluated(per_variant: PerVariantParity, case: str) -> None:
    """`list_variant` is bound from the request's exclusions in the gateway as in evaluation: the
    lists agree, and each variant's list is the one its own recommender gives."""
    assert per_variant.paths[case] == {"model:None"}, per_variant.paths[case]
    assert per_variant.served_by[case] == {PER_VARIANT[CASE_OF[case]]}  # each answer says what served it
    differ = _same(per_variant.offline, per_variant.gateway, case, per_variant.users)
    example = differ[:1] and (per_variant.offline[case][differ[0]], per_variant.gateway[case][differ[0]])
    assert not differ, f"the gateway differs from evaluation for {len(differ)} users, e.g. {differ[:1]}: {example}"
    differ = _same(per_variant.offline, per_variant.alone, case, per_variant.users)
    assert not differ, f"{len(differ)} users' lists are not what {PER_VARIANT[CASE_OF[case]]} alone gives"


def test_unseen_lists_leave_out_what_the_user_viewed_too(parity: Parity, daily_world) -> None:
    """`exclude_seen` takes out every item the user acted on (the online `user_seen` view), which
    in this world of views and purchases changes lists beyond what `exclude_purchased` takes out."""
    from scoring.batch import online_reader
    from scoring.rules import purchased, seen

    reader = online_reader(daily_world.settings)
    viewed_only = 0
    for user in parity.users:
        features = reader.user_features(user)
        shown = {item for item, _ in parity.gateway["unseen"][user]}
        assert not shown & seen(features), user
        viewed_only += bool(seen(features) - purchased(features))
    assert viewed_only, "no user has viewed items beyond what exclude_purchased takes out"
    changed = [u for u in parity.users if parity.gateway["unseen"][u] != parity.gateway["exclude"][u]]
    assert changed, "exclude_seen changed no list: the seen items never reached the rules"


@pytest.mark.parametrize("blanked", list(BLANKED))
def test_a_blanked_input_shows_as_a_difference(parity: Parity, blanked: str) -> None:
    """Feeding an input blank (as a signature input without a serving source would be) changes
    lists: the comparison above would have caught it."""
    differ = [u for case in SETTINGS for u in _same(parity.blanked[blanked], parity.gateway, case, parity.users)]
    assert differ, f"blanking {BLANKED[blanked][0]} changed no list: the parity test could not see that bug"


# -- the daily precompute -------------------------------------------------------------------------


def _precomputed(home: Path, run_date: str, redis_url: str, redis_prefix: str, monkeypatch) -> dict:
    """Run the publish task's precompute of version 1 in `home`; up to 40 users' stored lists."""
    import redis

    from features.precomputed import decode, recs_key
    from towerflow import tasks

    # The world's online store stays the embedded one; only the stored lists go to Redis.
    for name, value in {
        "TOWERFLOW_HOME": str(home),
        "TOWERFLOW_REDIS_URL": redis_url,
        "TOWERFLOW_FEATURE_ENV": "embedded",
        "TOWERFLOW_REDIS_PREFIX": redis_prefix,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    client = redis.Redis.from_url(redis_url)
    try:
        written = tasks.precompute(run_date, version=1)
        keys = sorted(k.decode() for k in client.scan_iter(f"{redis_prefix}recs:*", count=1000))
        assert written > 0 and len(keys) == written, (written, len(keys))
        users = [key.removeprefix(f"{redis_prefix}recs:") for key in keys[:40]]
        return {user: decode(client.hgetall(recs_key(redis_prefix, user))) for user in users}
    finally:
        stale = list(client.scan_iter(f"{redis_prefix}*", count=1000))
        if stale:
            client.delete(*stale)


def _recommended(home: Path, users: list[str], flags: list[str]) -> dict[str, list[str]]:
    """`towerflow recommend`'s 100 items per user at MOMENT from version 1 in `home`."""
    args = [sys.executable, "-m", "towerflow.cli", "recommend", "--json", "--at", MOMENT.isoformat()]
    args += ["--count", "100", *flags, "--version", "1"]
    args += [part for user in users for part in ("--user", user)]
    done = subprocess.run(args, env=_serving_env(home, 0, 0), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {u["user_id"]: [i["item_id"] for i in u["items"]] for u in json.loads(done.stdout)["users"]}


def test_a_per_variant_pairs_precompute_stores_each_variants_list(
    per_variant: PerVariantParity, daily_world, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pair published per variant answers each variant its own way, so the precompute stores
    each variant's list (the gateway's cached path serves the request's one): each equal to what
    `towerflow recommend` shows with that variant's exclusions."""
    stored = _precomputed(per_variant.home, daily_world.run_date, redis_url, redis_prefix, monkeypatch)
    users = list(stored)
    assert all(s is not None and set(s.variants) == {"new", "unseen"} for s in stored.values()), stored
    for case, variant in CASE_OF.items():
        shown = _recommended(per_variant.home, users, FLAGS[case])
        differ = [user for user in users if stored[user].for_variant(variant) != shown[user]]
        assert not differ, f"{variant}: {len(differ)} stored lists differ from towerflow recommend's, e.g. {differ[:1]}"


def test_the_daily_precompute_stores_what_towerflow_recommend_shows(
    daily_world, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publish task's precompute stores, for each user active on the run's last day, the list
    `towerflow recommend` shows that user at the run's moment with purchases kept (the gateway
    applies the request's rules when it serves a stored list); and the other variants' lists only
    if the gate published a pair that answers each variant its own way."""
    from scoring.batch import version_dirs
    from scoring.local import SavedModelPair
    from scoring.twostage import varies_by_variant

    home = daily_world.settings.home_dir
    stored = _precomputed(home, daily_world.run_date, redis_url, redis_prefix, monkeypatch)
    assert all(s is not None and s.model_version == "retrieval=1,ranking=1" for s in stored.values()), stored
    dirs, _ = version_dirs(daily_world.settings.models_dir, "1")
    others = {"new", "unseen"} if varies_by_variant(SavedModelPair(dirs)) else set()
    assert all(set(s.variants) == others for s in stored.values()), (others, stored)
    users = list(stored)
    shown = _recommended(home, users, ["--no-exclude-purchased"])
    differ = [user for user in users if stored[user].items != shown[user]]
    assert not differ, f"{len(differ)} stored lists differ from towerflow recommend's, e.g. {differ[:1]}"


# -- towerflow evaluate --served ---------------------------------------------------------------

WINDOW = ("2025-01-17", "2025-01-21")  # the run's holdout days


@pytest.fixture(scope="module")
def window_home(daily_world, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the run's home whose online store holds the features as of the window's first
    day (a fresh store, materialized up to it), as the daily run for that day would leave it."""
    import shutil

    from typer.testing import CliRunner

    from towerflow.cli import app

    home = tmp_path_factory.mktemp("window") / "home"
    shutil.copytree(daily_world.settings.home_dir, home, ignore=shutil.ignore_patterns("airflow", "feast"))
    env = {"TOWERFLOW_HOME": str(home)}
    for args in (["features", "apply"], ["features", "materialize", "--end", f"{WINDOW[0]}T00:00:00"]):
        done = CliRunner().invoke(app, args, env=env)
        assert done.exit_code == 0, done.output
    return home


def test_evaluate_served_replays_the_gateway_and_matches_offline(window_home, gw) -> None:
    """`towerflow evaluate --start D1 --end D2 --served` asks the running gateway for every user
    who bought in the window, at D1 (X-Request-Time), and its figures equal the offline ones."""
    port, model_port = gw.free_port(), gw.free_port()
    env = _serving_env(window_home, port, model_port)
    serve = _start_serving(env, port, model_port)
    try:
        args = [sys.executable, "-m", "towerflow.cli", "evaluate", "--start", WINDOW[0], "--end", WINDOW[1]]
        args += ["--served", "--url", f"http://127.0.0.1:{port}", "--json"]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1200)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout)
    for variant in ("all", "new"):
        offline, served = metrics[variant]["two_stage"], metrics[variant]["served"]
        assert offline["users"] > 20, offline
        for name, value in offline.items():
            assert served[name] == pytest.approx(value, abs=1e-9), (variant, name, served[name], value)
    report = json.loads(
        (window_home / "runs" / f"window-{WINDOW[0]}-{WINDOW[1]}" / "evaluation" / "evaluation.json").read_text()
    )
    # Users without features at D1 get popular items from the gateway, and from evaluation too.
    assert "model" in report["served_paths"] and set(report["served_paths"]) <= {"model", "fallback_popular"}
