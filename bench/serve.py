"""Gateway latency under load: `towerflow bench serve`.

Everything on this machine: a redis-server of the benchmark's own (online store, rate limits,
precomputed recommendations), `towerflow model-server` with contract toy models (retrieval:
100k items x 64 dims brute force, top 1000; ranking: 1000 candidates with features), the gateway
(uvicorn, one process), and an open-loop load generator in a separate process (asyncio, raw
HTTP/1.1 over keep-alive connections). Latency is counted from the moment the generator wakes to
send a request, so waiting for a free connection (the server is behind) counts, but the
generator's own timer overshoot does not: asyncio wakes a sleeper up to ~1.5 ms after its
deadline on these VMs, which measured from the schedule added ~1.4 ms to every figure (a bare
uvloop server answering a fixed response read p50 1.73 ms that way, 0.34 ms this way). How late
the generator woke is reported on its own (`*_sender_late_*`), so a starved generator shows.

Cases, each `TOWERFLOW_BENCH_SECONDS` long (default 60) at `TOWERFLOW_BENCH_RATE` requests/s
(default 100):
- `full`: the two-stage path (features -> retrieval 1000 -> item features -> ranking -> rules).
- `cached`: the model server stopped; precomputed recommendations from Redis.
- `floor` (in process, sequential): numpy top-1000 over the same item embeddings + one Redis
  HGETALL of the user's features + one in-process call of the same ranking SavedModel.
- `http_floor`: an empty FastAPI route (`bench.http_floor`) behind the same uvicorn settings,
  under the same load: what this machine, the framework and the generator cost before any work.

Targets (issue 6): full p99 < 25 ms at 100 req/s; full p50 <= 2x floor p50; cached p99 < 3 ms.
Beside them, for the full and cached paths, the gateway's own CPU per request and its time outside
model calls (from its /metrics): the part production keeps when TF Serving replaces the stand-in.
Beside them, how steadily this machine runs code at all (`bench.cpu_stalls`, measured with the
stack idle): on a VM whose vCPUs slow to a tenth of their speed for tens of milliseconds every
second or two, no service meets a p99 target shorter than those windows.

The load generator is this module too: `python -m bench.serve --url ... --token ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ITEMS, USERS, DIM, K = 100_000, 5_000, 64, 1000
PREFIX = "tfbench:"


def _seconds() -> float:
    return float(os.environ.get("TOWERFLOW_BENCH_SECONDS", "60"))


def _rate() -> float:
    return float(os.environ.get("TOWERFLOW_BENCH_RATE", "100"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentiles(ms: list[float]) -> dict[str, float]:
    import numpy as np

    if not ms:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    p50, p95, p99 = np.percentile(np.array(ms), [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


# ------------------------------------------------------------------------------------------------
# Load generator (runs in its own process)


async def _load(url: str, token: str, users: list[str], rate: float, seconds: float, conns: int) -> dict[str, Any]:
    from urllib.parse import urlparse

    target = urlparse(url)
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection(target.hostname, target.port))
    latencies: list[float] = []
    late: list[float] = []
    statuses: dict[str, int] = {}
    paths: dict[str, int] = {}
    rng = random.Random(7)

    async def one(scheduled: float, user: str) -> None:
        woke = time.perf_counter()
        late.append((woke - scheduled) * 1e3)
        reader, writer = await pool.get()
        request = (
            f"GET /v1/recommendations?user_id={user}&count=10 HTTP/1.1\r\nHost: {target.netloc}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            done = time.perf_counter()
            status = head.split(b" ", 2)[1].decode()
            statuses[status] = statuses.get(status, 0) + 1
            for path in (b"model", b"cached", b"fallback_popular"):
                if b'"path":"' + path + b'"' in body:
                    paths[path.decode()] = paths.get(path.decode(), 0) + 1
            latencies.append((done - woke) * 1e3)
            pool.put_nowait((reader, writer))
        except (OSError, asyncio.IncompleteReadError, StopIteration) as err:
            statuses[type(err).__name__] = statuses.get(type(err).__name__, 0) + 1
            writer.close()
            pool.put_nowait(await asyncio.open_connection(target.hostname, target.port))

    tasks = []
    start = time.perf_counter()
    n = 0
    while True:
        scheduled = start + n / rate
        if scheduled - start >= seconds:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, rng.choice(users))))
        n += 1
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {
        "requests": n,
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "statuses": statuses,
        "paths": paths,
        **_percentiles(latencies),
        **{f"sender_late_{k}": v for k, v in _percentiles(late).items() if k != "p95_ms"},
    }


def _run_load(url: str, token: str, users_file: Path, seconds: float, rate: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.serve", "--url", url, "--token", token, "--users", str(users_file)]
    cmd += ["--seconds", str(seconds), "--rate", str(rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="open-loop load on GET /v1/recommendations")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--users", type=Path, required=True, help="file with one user id per line")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    users = args.users.read_text().split()
    result = asyncio.run(_load(args.url, args.token, users, args.rate, args.seconds, args.connections))
    print(json.dumps(result))  # noqa: T201 - read by the parent benchmark


# ------------------------------------------------------------------------------------------------
# The benchmark


def _gateway_stats(url: str) -> dict[str, Any]:
    """Mean ms per stage and responses per path/reason, from the gateway's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    served: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == "towerflow_gateway_stage_seconds_sum":
                sums[sample.labels["stage"]] = sample.value
            elif sample.name == "towerflow_gateway_stage_seconds_count":
                counts[sample.labels["stage"]] = sample.value
            elif sample.name == "towerflow_gateway_recommendations_total":
                served[f"{sample.labels['path']}/{sample.labels['reason'] or '-'}"] = sample.value
    means = {stage: round(sums[stage] / counts[stage] * 1e3, 3) for stage in sums if counts.get(stage)}
    return {"stage_mean_ms": means, "served": served}


MODEL_STAGES = ("retrieval", "ranking")  # the time inside model-server calls


def _request_sums(url: str) -> dict[str, float]:
    """Cumulative seconds and counts of `/v1/recommendations` requests and of the model stages,
    from the gateway's /metrics: two readings bracket a case."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    sums = {"requests": 0.0, "seconds": 0.0, "model_seconds": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.labels.get("route") == "/v1/recommendations":
                if sample.name == "towerflow_gateway_http_request_seconds_sum":
                    sums["seconds"] += sample.value
                elif sample.name == "towerflow_gateway_http_request_seconds_count":
                    sums["requests"] += sample.value
            elif sample.name == "towerflow_gateway_stage_seconds_sum" and sample.labels["stage"] in MODEL_STAGES:
                sums["model_seconds"] += sample.value
    return sums


def _gateway_own(before: dict[str, float], after: dict[str, float], cpu_seconds: float) -> dict[str, float]:
    """What production keeps when TF Serving replaces the stand-in: per request, the gateway's
    own CPU and its time outside model calls (the whole request as the gateway timed it, less
    the retrieval and ranking stages)."""
    requests = max(1.0, after["requests"] - before["requests"])
    inside = after["model_seconds"] - before["model_seconds"]
    whole = after["seconds"] - before["seconds"]
    return {
        "gateway_cpu_ms_per_request": round(cpu_seconds / requests * 1e3, 3),
        "gateway_ms_per_request": round(whole / requests * 1e3, 3),
        "model_calls_ms_per_request": round(inside / requests * 1e3, 3),
        "outside_model_calls_ms_per_request": round((whole - inside) / requests * 1e3, 3),
    }


def _cpu_seconds(procs: dict[str, subprocess.Popen]) -> dict[str, float]:
    """User + system CPU seconds each process, with its children, has used so far."""
    import psutil

    out = {}
    for name, proc in procs.items():
        parent = psutil.Process(proc.pid)
        out[name] = sum(sum(p.cpu_times()[:2]) for p in (parent, *parent.children(recursive=True)))
    return out


def _wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not yet
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{what} not within {timeout}s")


def _floor(settings: Any, store: Any, models: Path, embeddings: Any, users: list[str]) -> dict[str, float]:
    """numpy top-1000 + one Redis HGETALL + one in-process ranking call, sequentially."""
    import numpy as np
    import tensorflow as tf

    from features.feast_compat import redis_key
    from features.reader import _entity_key
    from features.store import redis_client

    rank = tf.saved_model.load(str(models / "ranking" / "1")).signatures["serving_default"]
    client = redis_client(store)
    version = store.config.entity_key_serialization_version
    rng = np.random.default_rng(3)
    user_vectors = rng.standard_normal((len(users), DIM)).astype(np.float32)
    ids = np.array([f"i{n}" for n in range(ITEMS)], dtype=object)
    categories = np.array([b"garden"] * K, dtype=object)
    times = []
    for n in range(1200):
        start = time.perf_counter()
        scores = embeddings @ user_vectors[n % len(users)]
        top = np.argpartition(-scores, K)[:K]
        top = top[np.argsort(-scores[top])]
        client.hgetall(redis_key(store.project, _entity_key("user_id", users[n % len(users)]), version))
        rank(
            user_id=tf.constant([b"u1"]),
            item_id=tf.constant([[i.encode() for i in ids[top]]]),
            retrieval_score=tf.constant(scores[top][None, :]),
            user_features__purchases_30d=tf.constant([1], tf.int64),
            item_features__popularity=tf.constant(np.ones((1, K), np.float32)),
            item_features__age_days=tf.constant(np.ones((1, K), np.float64)),
            item_features__category=tf.constant(categories[None, :]),
            day_of_week=tf.constant([2], tf.int64),
        )
        if n >= 200:  # warm-up excluded
            times.append((time.perf_counter() - start) * 1e3)
    return _percentiles(times)


def _http_floor(root: Path, users_file: Path, seconds: float, rate: float) -> dict[str, Any]:
    """The same load against an empty FastAPI route (`bench.http_floor`) in its own uvicorn."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bench.http_floor:create_app", "--factory", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    with (root / "http_floor.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{url}/v1/recommendations?user_id=u1").status_code == 200, 60, "HTTP floor app")
        return _run_load(url, "-", users_file, seconds, rate)
    finally:
        proc.terminate()
        proc.wait(30)


@dataclass
class Stack:
    """The running benchmark stack: where to send requests and what the floor needs."""

    url: str
    token: str
    users_file: Path
    settings: Any
    store: Any
    models: Path
    embeddings: Any
    users: list[str]
    materialized: Any
    procs: dict[str, subprocess.Popen]

    def get(self, path: str) -> Any:
        import httpx

        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=5)


@contextmanager
def stack(root: Path, console: Any) -> Iterator[Stack]:
    """redis-server, gold + Feast materialize, toy models, model server and gateway, all under `root`."""
    import numpy as np

    from features.precomputed import write_precomputed
    from jobs import feature_store as fs
    from serving.gateway.auth import dev_secret, mint_token
    from testsupport.feature_samples import day_stamp, write_sample_gold
    from testsupport.toy_models import save_contract_ranking, save_contract_retrieval
    from towerflow import model_config as mc
    from towerflow.lake import Lake
    from towerflow.settings import Settings

    procs: dict[str, subprocess.Popen] = {}
    redis_port, model_port, port = _free_port(), _free_port(), _free_port()
    redis_cmd = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    redis_cmd += ["--appendonly", "no", "--daemonize", "no", "--dir", str(root)]
    procs["redis"] = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        settings = Settings(home=root / "home", redis_url=redis_url, feature_env="redis", redis_prefix=PREFIX)
        _wait(lambda: fs.redis_reachable(redis_url), 10, "redis-server")
        with console.status(f"gold tables ({ITEMS:,} items, {USERS:,} users), feast apply + materialize"):
            gold = write_sample_gold(Lake(settings.lake), users=USERS, items=ITEMS, days=1, embeddings=False)
            store = fs.feature_store(settings, "redis")
            fs.apply(store)
            mat = fs.materialize(store, day_stamp(gold.days[-1]))
        with console.status("toy models (retrieval 100k x 64, top 1000; ranking) and precomputed recs"):
            embeddings = np.random.default_rng(1).standard_normal((ITEMS, DIM)).astype(np.float32)
            models = settings.models_dir
            save_contract_retrieval(
                models / "retrieval", 1, gold.items, dim=DIM, k=K, num_users=USERS, item_embeddings=embeddings
            )
            save_contract_ranking(models / "ranking", 1, dim=DIM, buckets=ITEMS, num_users=USERS)
            mc.write_models_config(
                models / "models.config",
                [mc.ModelEntry.under(models, n, labels={"stable": 1}) for n in ("retrieval", "ranking")],
            )
            rng = random.Random(5)
            recs = {u: rng.sample(gold.items, 50) for u in gold.users}
            write_precomputed(redis_url, recs, "toy-1", prefix=PREFIX, popular=gold.items[:100])
        env = {
            **os.environ,
            "TOWERFLOW_HOME": str(settings.home),
            "TOWERFLOW_REDIS_URL": redis_url,
            "TOWERFLOW_FEATURE_ENV": "redis",
            "TOWERFLOW_REDIS_PREFIX": PREFIX,
            "TOWERFLOW_MODEL_SERVER_TARGET": f"127.0.0.1:{model_port}",
            "TOWERFLOW_RATE_LIMIT_USER": "100000",
            "TOWERFLOW_RATE_LIMIT_TOKEN": "10000000",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        env.pop("TOWERFLOW_JWT_KEY", None)
        log = (root / "processes.log").open("ab")
        model_cmd = [sys.executable, "-m", "towerflow.cli", "model-server", "--port", str(model_port)]
        model_cmd += ["--host", "127.0.0.1", "--poll-seconds", "30"]
        procs["model"] = subprocess.Popen(model_cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        gateway_cmd = [sys.executable, "-m", "uvicorn", "serving.gateway.main:create_app", "--factory"]
        gateway_cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        gateway_cmd += ["--loop", "uvloop", "--http", "httptools"]
        procs["gateway"] = subprocess.Popen(gateway_cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        token = mint_token(dev_secret(settings), subject="bench", scopes=["recommend:any"])
        users_file = root / "users.txt"
        users_file.write_text("\n".join(gold.users))
        running = Stack(
            f"http://127.0.0.1:{port}", token, users_file, settings, store, models, embeddings, gold.users, mat, procs
        )
        with console.status("starting the model server and the gateway (item snapshot of 100k items)"):
            _wait(lambda: running.get("/readyz").status_code == 200, 300, "gateway ready")
            _wait(lambda: running.get("/v1/recommendations?user_id=u1").json()["path"] == "model", 120, "model path")
        yield running
    finally:
        for name in ("gateway", "model", "redis"):
            proc = procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def run() -> dict[str, object]:
    from rich.console import Console
    from rich.table import Table

    from bench import cpu_stalls

    console = Console()
    seconds, rate = _seconds(), _rate()
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), console) as running:
        url, token, users_file = running.url, running.token, running.users_file
        with console.status("CPU stalls of this machine (stack idle): spin per CPU, fixed 2 ms task"):
            stalls = cpu_stalls.probe()
        with console.status(f"full path: {rate:g} req/s for {seconds:g} s"):
            _run_load(url, token, users_file, min(10.0, seconds), rate)  # warm-up, not reported
            before, sums = _cpu_seconds(running.procs), _request_sums(url)
            full = _run_load(url, token, users_file, seconds, rate)
            spent = _cpu_seconds(running.procs)
            cpu_ms = {
                name: round((used - before[name]) / max(1, full["requests"]) * 1e3, 2) for name, used in spent.items()
            }
            own = {"full": _gateway_own(sums, _request_sums(url), spent["gateway"] - before["gateway"])}
            stats = _gateway_stats(url)  # cumulative since start (warm-up included)
        with console.status("floor: numpy top-1000 + one Redis read + in-process ranking"):
            floor = _floor(running.settings, running.store, running.models, running.embeddings, running.users)
        mat = running.materialized
        running.procs["model"].send_signal(signal.SIGTERM)
        running.procs["model"].wait(30)
        _wait(lambda: running.get("/v1/recommendations?user_id=u1").json()["path"] == "cached", 30, "cached path")
        with console.status(f"cached path (model server stopped): {rate:g} req/s for {seconds:g} s"):
            gateway = {"gateway": running.procs["gateway"]}
            before, sums = _cpu_seconds(gateway), _request_sums(url)
            cached = _run_load(url, token, users_file, seconds, rate)
            spent = _cpu_seconds(gateway)["gateway"] - before["gateway"]
            own["cached"] = _gateway_own(sums, _request_sums(url), spent)
        with console.status(f"HTTP floor (empty FastAPI route): {rate:g} req/s for {seconds:g} s"):
            http_floor = _http_floor(Path(tmp), users_file, seconds, rate)
    table = Table(title=f"GET /v1/recommendations, {rate:g} req/s for {seconds:g} s ({ITEMS:,} items, top {K})")
    for column in ("case", "p50 ms", "p95 ms", "p99 ms", "req/s", "statuses", "paths"):
        table.add_column(column, justify="left" if column in ("case", "statuses", "paths") else "right")
    for name, fig in (("full (two-stage)", full), ("cached (precomputed)", cached), ("HTTP floor", http_floor)):
        table.add_row(
            name,
            *(f"{fig[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
            f"{fig['throughput_rps']:.1f}",
            json.dumps(fig["statuses"]),
            json.dumps(fig["paths"]),
        )
    table.add_row("floor (in process)", *(f"{floor[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms")), "", "", "")
    console.print(table)
    split = Table(title="the gateway's own share, per request (means; what stays when TF Serving serves the models)")
    for column in ("path", "gateway CPU ms", "gateway time ms", "inside model calls ms", "outside model calls ms"):
        split.add_column(column, justify="left" if column == "path" else "right")
    for name, fig in own.items():
        split.add_row(name, *(f"{v:.2f}" for v in fig.values()))
    console.print(split)
    console.print(cpu_stalls.describe(stalls), soft_wrap=True)
    late = {n: (f["sender_late_p50_ms"], f["sender_late_p99_ms"]) for n, f in (("full", full), ("cached", cached))}
    console.print(f"load generator woke late by (p50, p99 ms; not counted in latency): {late}", soft_wrap=True)
    console.print(f"materialized {mat.entities:,} entity rows in {mat.seconds:.1f} s")
    console.print(f"gateway stage means (ms, warm-up + full run): {stats['stage_mean_ms']}", soft_wrap=True)
    console.print(f"gateway responses by path/reason: {stats['served']}", soft_wrap=True)
    console.print(f"CPU ms per request on the full path, by process: {cpu_ms}", soft_wrap=True)
    load = os.getloadavg()
    console.print(f"load average at the end (other work on this machine included): {load}")
    figures: dict[str, object] = {"seconds": seconds, "rate_rps": rate, "catalog_items": ITEMS, "candidates": K}
    for name, fig in (("full", full), ("cached", cached), ("floor", floor), ("http_floor", http_floor)):
        for key, value in fig.items():
            if key not in ("statuses", "paths"):
                figures[f"{name}_{key}"] = value
    figures.update({f"machine_{k}": v for k, v in stalls.items()})
    figures["full_paths"] = full["paths"]
    figures["full_statuses"] = full["statuses"]
    figures["cached_paths"] = cached["paths"]
    figures["cached_statuses"] = cached["statuses"]
    figures["gateway_stage_mean_ms"] = stats["stage_mean_ms"]
    figures["gateway_served"] = stats["served"]
    figures["full_cpu_ms_per_request"] = cpu_ms
    for name, fig in own.items():
        figures.update({f"{name}_{key}": value for key, value in fig.items()})
    figures["loadavg_1m"] = round(load[0], 2)
    figures["full_p99_under_25ms"] = full["p99_ms"] < 25
    figures["full_p50_within_2x_floor"] = full["p50_ms"] <= 2 * floor["p50_ms"]
    figures["cached_p99_under_3ms"] = cached["p99_ms"] < 3
    return figures


if __name__ == "__main__":
    main()
