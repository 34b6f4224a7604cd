"""End to end over real processes, and fault tests.

One stack per module: a redis-server of its own on a spare port (the shared Redis on 6379 is
never stopped or flushed), the session's world (tests/serving/conftest.py) written as gold tables
and applied and materialized into it through Feast, the tiny model trained on that world
published into its model base, precomputed recommendations, then `towerflow model-server` and the
gateway (uvicorn) as child processes. The fault tests stop and restart the model server and that Redis
while traffic flows and expect no 5xx, the fallback path, and recovery without intervention.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import need

pytestmark = pytest.mark.integration
PREFIX = "tfe2e:"


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as err:  # noqa: BLE001 - not yet
            last = err
        time.sleep(0.2)
    raise AssertionError(f"{what} not within {timeout}s (last: {last!r})")


class RedisServer:
    """A redis-server of this test's own (no persistence except an explicit SAVE)."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--daemonize", "no", "--dir", str(self.folder), "--dbfilename", "dump.rdb"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis.Redis.from_url(self.url).ping(), 10, "redis-server up")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, gw: SimpleNamespace, tiny_models):
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    import httpx
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from features.precomputed import write_precomputed
    from jobs import feature_store as fs
    from models.registry import publish
    from testsupport.feature_samples import write_world_gold
    from towerflow.lake import Lake
    from towerflow.settings import Settings

    root = tmp_path_factory.mktemp("gateway-e2e")
    redis_server = RedisServer(gw.free_port(), root)
    redis_server.start()
    procs: dict[str, subprocess.Popen] = {}
    try:
        home = root / "home"
        settings = Settings(home=home, redis_url=redis_server.url, feature_env="redis", redis_prefix=PREFIX)
        gold = write_world_gold(Lake(settings.lake), gw.world)
        store = fs.feature_store(settings, "redis")
        fs.apply(store)
        fs.materialize(store, gw.world.end)
        publish(settings.models_dir, tiny_models.staged, tiny_models.meta)
        n_items = len(gold.items)
        precomputed = {u: [gold.items[(n * 7 + j) % n_items] for j in range(30)] for n, u in enumerate(gold.users)}
        write_precomputed(redis_server.url, precomputed, "tiny-1", prefix=PREFIX, popular=gold.items[:20])
        users = DeltaTable(settings.table_uri("gold", "user_features")).to_pyarrow_table()
        last = users.filter(pc.equal(users.column("feature_date"), gold.days[-1]))
        recent = dict(zip(last.column("user_id").to_pylist(), last.column("last_10_items").to_pylist(), strict=True))

        model_port, port = gw.free_port(), gw.free_port()
        env = {
            **os.environ,
            "TOWERFLOW_HOME": str(home),
            "TOWERFLOW_REDIS_URL": redis_server.url,
            "TOWERFLOW_FEATURE_ENV": "redis",
            "TOWERFLOW_REDIS_PREFIX": PREFIX,
            "TOWERFLOW_MODEL_SERVER_TARGET": f"127.0.0.1:{model_port}",
            "TOWERFLOW_BREAKER_COOLDOWN_S": "0.5",
            "TOWERFLOW_IMPRESSIONS_FLUSH_S": "1",
            "TOWERFLOW_LOG_FORMAT": "json",
            "TOWERFLOW_RATE_LIMIT_USER": "100000",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        env.pop("TOWERFLOW_JWT_KEY", None)
        model_cmd = [sys.executable, "-m", "towerflow.cli", "model-server", "--port", str(model_port)]
        model_cmd += ["--host", "127.0.0.1", "--poll-seconds", "1"]
        gateway_cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "serving.gateway.main:serve_app",
            "--factory",
            "--port",
            str(port),
        ]
        gateway_cmd += ["--host", "127.0.0.1", "--no-access-log", "--loop", "uvloop"]
        procs["model"] = spawn(model_cmd, env, root / "model-server.log")
        procs["gateway"] = spawn(gateway_cmd, env, root / "gateway.log")
        worker_cmd = [sys.executable, "-m", "towerflow.cli", "stream-worker"]
        procs["worker"] = spawn(worker_cmd, env, root / "stream-worker.log")
        token = (
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "towerflow.cli",
                    "token",
                    "--service",
                    "e2e",
                    "--scopes",
                    "recommend:any events:write catalog:write experiments:read",
                ],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
        wait_for(lambda: http.get("/readyz").status_code == 200, 150, "gateway ready")
        # The first Predicts of a fresh model server pay TF's first-call cost and may overrun
        # the stage budget (served `cached`, by design); start the tests warm.
        wait_for(
            lambda: http.get("/v1/recommendations", params={"user_id": "u0"}).json()["path"] == "model",
            60,
            "a model-path response",
        )
        ns = SimpleNamespace(
            http=http,
            url=f"http://127.0.0.1:{port}",
            token=token,
            gold=gold,
            recent=recent,
            redis=redis_server,
            procs=procs,
            env=env,
            model_cmd=model_cmd,
            root=root,
            settings=settings,
        )
        ns.restart_model_server = lambda: procs.__setitem__("model", spawn(model_cmd, env, root / "model-server.log"))
        yield ns
        http.close()
    except BaseException:
        for name in ("gateway.log", "model-server.log", "stream-worker.log"):
            if (root / name).exists():
                sys.stderr.write(f"--- {name}\n{(root / name).read_text()[-4000:]}\n")
        raise
    finally:
        stop(procs.get("worker"))
        stop(procs.get("gateway"))
        stop(procs.get("model"))
        redis_server.stop()


def served_counts(stack) -> Counter:
    """The gateway's `towerflow_gateway_recommendations_total` per (path, reason), now. The
    gateway process serves every test of the module: compare before and after, never absolutes."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter = Counter()
    for family in text_string_to_metric_families(stack.http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "towerflow_gateway_recommendations_total":
                counts[(sample.labels["path"], sample.labels["reason"])] += sample.value
    return counts


def get(stack, user: str, **params):
    return stack.http.get("/v1/recommendations", params={"user_id": user, **params}, timeout=10)


def test_recommendations_over_http(stack) -> None:
    for user in stack.gold.users[:10]:
        response = get(stack, user, count=10)
        assert response.status_code == 200, response.text
        body = response.json()
        ids = [i["item_id"] for i in body["items"]]
        assert body["path"] == "model", body
        assert len(ids) == len(set(ids)) == 10
        assert set(ids) <= set(stack.gold.items)
        assert not set(ids) & set(stack.recent[user] or [])
        assert body["model_versions"] == {
            "retrieval": "1",
            "ranking": "1",
            "recommender": "two_stage",
        }


def test_gateway_logs_are_json_lines_and_a_request_id_comes_back(stack) -> None:
    response = stack.http.get("/v1/recommendations", params={"user_id": "u1"}, headers={"X-Request-ID": "e2e-req-0001"})
    assert response.headers["x-request-id"] == response.json()["request_id"] == "e2e-req-0001"
    entries = []
    for line in (stack.root / "gateway.log").read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(e["logger"].startswith("uvicorn") for e in entries)  # the server's own lines too
    assert any(e["logger"] == "serving.gateway.main" and e["message"].startswith("catalog rebuilt") for e in entries)


def test_bad_input_over_http(stack) -> None:
    cold = get(stack, "never-seen-user", count=5, category="garden")
    assert cold.status_code == 200 and cold.json()["path"] == "fallback_popular"
    assert len(cold.json()["items"]) == 5
    for count in ("0", "1000", "abc"):
        bad = get(stack, "u1", count=count)
        assert bad.status_code == 422 and bad.json()["message"].startswith("count:")
    assert stack.http.get("/v1/recommendations?user_id=u1", headers={"Authorization": ""}).status_code == 401
    import httpx

    wrong = subprocess.run(
        [sys.executable, "-m", "towerflow.cli", "token", "--user", "e2e", "--scopes", "events:write"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[-1]
    forbidden = httpx.get(f"{stack.url}/v1/recommendations?user_id=u1", headers={"Authorization": f"Bearer {wrong}"})
    assert forbidden.status_code == 403


def test_impressions_reach_bronze(stack) -> None:
    from towerflow.lake import Lake

    body = get(stack, "u3", count=4).json()
    lake = Lake(stack.settings.lake)
    uri = stack.settings.table_uri("bronze", "impressions")

    def landed():
        table = lake.read(uri)
        return table is not None and body["request_id"] in table.column("request_id").to_pylist()

    wait_for(landed, 15, "impressions flushed")


def test_a_posted_click_reaches_the_online_store_and_the_lake(stack) -> None:
    """Through the processes as deployed: gateway -> Redis stream -> `towerflow stream-worker`
    -> Feast push (the user's recent items) and bronze/events."""
    from features.store import feature_store
    from towerflow.lake import Lake

    item = stack.gold.items[-1]
    event = {"user_id": "u4", "item_id": item, "action": "click", "event_id": f"e2e-{item}"}
    posted = stack.http.post("/v1/events", json=event)
    assert posted.status_code == 202, posted.text
    lake = Lake(stack.settings.lake)
    uri = stack.settings.table_uri("bronze", "events")

    def landed():
        table = lake.read(uri)
        return table is not None and event["event_id"] in table.column("event_id").to_pylist()

    wait_for(landed, 30, "the click in bronze/events")
    online = feature_store(stack.settings, "redis").get_online_features(  # the worker's Feast push
        features=["user_recent:last_10_items"], entity_rows=[{"user_id": "u4"}]
    )
    assert online.to_dict()["last_10_items"][0][0] == item


def test_schemathesis_finds_no_server_errors(stack) -> None:
    st = Path(sys.executable).with_name("st")
    need(st.exists(), "schemathesis CLI (st) is not installed")
    cmd = [str(st), "run", f"{stack.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "15"]
    cmd += ["--max-time", "20", "--seed", "7", "--phases", "examples,coverage,fuzzing", "--workers", "1"]
    cmd += ["-H", f"Authorization: Bearer {stack.token}", "--request-timeout", "10"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    paths = stack.http.get("/openapi.json").json()["paths"]
    operations = sum(len(methods) for methods in paths.values())
    assert f"Tested: {operations}" in out.stdout, out.stdout[-2000:]  # it did call every operation
    # Past the token into every route, except those that need a scope the stack's token does not
    # have on purpose (fuzzed experiments would change who is served what for the later tests).
    forbidden = re.search(r"403 Forbidden \(\d+ operations?\):\n((?:\s+- .+\n)+)", out.stdout)
    refused = set(re.findall(r"- (\S+ \S+)", forbidden.group(1))) if forbidden else set()
    assert refused <= {"POST /v1/experiments", "POST /v1/experiments/{experiment_id}/stop"}, out.stdout[-2000:]


class Traffic:
    """Requests in a background thread; records status codes and paths."""

    def __init__(self, stack) -> None:
        self.stack, self.codes, self.paths, self.reasons = stack, Counter(), [], Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        users = self.stack.gold.users
        with httpx.Client(base_url=self.stack.url, headers={"Authorization": f"Bearer {self.stack.token}"}) as http:
            n = 0
            while not self._stop.is_set():
                try:
                    r = http.get("/v1/recommendations", params={"user_id": users[n % len(users)]}, timeout=5)
                    self.codes[r.status_code] += 1
                    if r.status_code == 200:
                        self.paths.append(r.json()["path"])
                        self.reasons[(r.json()["path"], r.json()["reason"])] += 1
                except httpx.HTTPError as err:
                    self.codes[type(err).__name__] += 1
                n += 1
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_for_path(self, path: str, timeout: float) -> None:
        start = len(self.paths)
        wait_for(lambda: path in self.paths[start:], timeout, f"a response served by {path}")


def test_model_server_outage_serves_precomputed_and_recovers(stack) -> None:
    before = served_counts(stack)
    with Traffic(stack) as traffic:
        traffic.wait_for_path("model", 30)
        stop(stack.procs["model"], signal.SIGKILL)
        traffic.wait_for_path("cached", 15)
        time.sleep(1.0)
        stack.restart_model_server()
        traffic.wait_for_path("model", 120)
    assert set(traffic.codes) == {200}, traffic.codes
    # When the model path failed, the precomputed list served (every user has one), except the
    # odd request whose Redis read overran its budget on a busy machine (popular then).
    failures = {k: n for k, n in traffic.reasons.items() if (k[1] or "").startswith("model")}
    cached = sum(n for (path, _), n in failures.items() if path == "cached")
    assert failures and cached >= 0.95 * sum(failures.values()), traffic.reasons
    counted = served_counts(stack) - before
    assert counted[("cached", "model_unavailable")] > 0, counted  # the gateway's metrics saw it too


def test_redis_outage_serves_popular_and_recovers(stack) -> None:
    import redis

    redis.Redis.from_url(stack.redis.url).save()  # so the restarted server comes back with the data
    before = served_counts(stack)
    with Traffic(stack) as traffic:
        traffic.wait_for_path("model", 30)
        stack.redis.stop()
        traffic.wait_for_path("fallback_popular", 15)
        time.sleep(1.0)
        stack.redis.start()
        traffic.wait_for_path("model", 60)
    assert set(traffic.codes) == {200}, traffic.codes
    counted = served_counts(stack) - before
    assert counted[("fallback_popular", "online_store_unavailable")] > 0, counted


def test_towerflow_serve_runs_both_and_stops_cleanly(stack, gw) -> None:
    import httpx

    port, model_port = gw.free_port(), gw.free_port()
    cmd = [sys.executable, "-m", "towerflow.cli", "serve", "--port", str(port), "--model-port", str(model_port)]
    env = {k: v for k, v in stack.env.items() if k != "TOWERFLOW_MODEL_SERVER_TARGET"}
    proc = spawn(cmd, env, stack.root / "serve.log")
    try:
        headers = {"Authorization": f"Bearer {stack.token}"}

        def served_by_model():
            r = httpx.get(f"http://127.0.0.1:{port}/v1/recommendations?user_id=u2", headers=headers, timeout=5)
            return r.status_code == 200 and r.json()["path"] == "model"

        wait_for(served_by_model, 150, "towerflow serve answering from the model")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(40) == 0
    finally:
        stop(proc)
    log = (stack.root / "serve.log").read_text()
    assert "stopped" in log
