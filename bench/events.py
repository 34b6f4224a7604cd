"""Event intake and the stream worker under load: `towerflow bench events`.

Everything on this machine: a redis-server of the benchmark's own (online store and the event
stream, as Redis Streams), sample gold tables (5,000 users, 2,000 items) applied and materialized
into it by Feast, the gateway (uvicorn, one process) and `towerflow stream-worker`, each a
subprocess. No models: `POST /v1/events` does not call them.

Cases:
- `lag`: a paced background load of `TOWERFLOW_BENCH_EVENTS_RATE` events/s (default 1,000; batches
  of 50 every 50 ms) for `TOWERFLOW_BENCH_SECONDS` (default 60), and beside it
  `TOWERFLOW_BENCH_EVENTS_PROBES_PER_S` probes a second (default 5):
  each posts one click of a probe user on an item never seen before, then reads the user's online
  features (one HGETALL every 5 ms, as the gateway reads them) until the item is first in
  `user_recent.last_10_items`. Lag is from the probe's post starting to the item being visible,
  what a user sees. The worker's own `towerflow_stream_event_to_online_seconds` (from the gateway
  accepting an event to its push) is scraped beside it, and by thirds of the window its lake-merge
  and online-update times: the day's bronze partition grows as the case runs.
- `single`: `TOWERFLOW_BENCH_EVENTS_CLIENTS` clients (default 16), each posting one event per
  request back to back for `TOWERFLOW_BENCH_EVENTS_BURST_S`.
- `batched`: 4 clients posting 1,000 events per request, the same time (default 10 s each).
- `drain`: the bursts leave the worker far behind; for `TOWERFLOW_BENCH_EVENTS_DRAIN_S` (default
  30) it works through the backlog alone: how fast it lands events when it has plenty to do.

Throughput counts accepted events (202) per second while the worker consumes beside the gateway,
as it would in production on one box; the load generator (raw HTTP/1.1 over keep-alive
connections, a process of its own) takes CPU from the same two cores. CPU seconds per 1,000
events come from the processes' (and their children's) user + system times around each case;
the gateway's time appending to the stream from its /metrics (`events_append` stage).

Targets (issue 19): batched >= 5,000 events/s; lag p95 < 500 ms and p99 < 1 s. Reported as
pass/fail, not asserted.

The load generator is this module too: `python -m bench.events --url ... --token ... --mode single`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.serve import _cpu_seconds, _free_port, _percentiles, _wait

USERS, ITEMS = 5_000, 2_000
PREFIX = "tfbenchev:"
PACED_BATCH = 50  # events per request of the background load
BURST_BATCH = 1_000  # events per request of the batched case (the route's most)
BATCHED_CLIENTS = 4
PROBE_USERS = 16  # a probe holds its user until it sees its click, so probes never overlap on one
PROBE_POLL_S = 0.005
PROBE_TIMEOUT_S = 10.0
ACTIONS = ("view", "view", "view", "click", "click", "add_to_cart", "purchase")
TARGET_BATCHED_EPS = 5_000
TARGET_LAG_P95_MS, TARGET_LAG_P99_MS = 500, 1_000


def _env(name: str, default: float) -> float:
    return float(os.environ.get(f"TOWERFLOW_BENCH_{name}", str(default)))


def _event(rng: random.Random) -> dict[str, Any]:
    return {
        "user_id": f"u{rng.randrange(USERS)}",
        "item_id": f"i{rng.randrange(ITEMS)}",
        "action": rng.choice(ACTIONS),
    }


# ------------------------------------------------------------------------------------------------
# Pure helpers


def bucket_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """The `q` quantile from cumulative histogram buckets, as Prometheus' `histogram_quantile`
    estimates it (linear inside the bucket; the last finite bound when it falls in `+Inf`).

    Args:
        buckets: (upper bound, cumulative count) pairs, ascending, the last bound `inf`.
        q: the quantile, 0..1.

    Returns:
        The estimate, NaN when the histogram is empty.
    """
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def targets(batched_eps: float, lag_p95_ms: float, lag_p99_ms: float) -> dict[str, bool]:
    """Issue 19's targets as pass/fail (NaN fails)."""
    return {
        "batched_at_least_5000_eps": batched_eps >= TARGET_BATCHED_EPS,
        "lag_p95_under_500ms": lag_p95_ms < TARGET_LAG_P95_MS,
        "lag_p99_under_1s": lag_p99_ms < TARGET_LAG_P99_MS,
    }


def per_thousand(cpu_seconds: float, events: float) -> float:
    """CPU seconds per 1,000 events (NaN without events)."""
    return round(cpu_seconds / events * 1e3, 3) if events > 0 else math.nan


# ------------------------------------------------------------------------------------------------
# Load generator for the bursts (runs in its own process)


async def _burst(url: str, token: str, mode: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` connections, each posting back to back until `seconds` have passed."""
    from urllib.parse import urlparse

    target = urlparse(url)
    rng = random.Random(11)
    per_request = 1 if mode == "single" else BURST_BATCH
    bodies = []
    for _ in range(512 if mode == "single" else 8):
        events = [_event(rng) for _ in range(per_request)]
        bodies.append(json.dumps(events[0] if mode == "single" else {"events": events}).encode())
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: {target.netloc}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    accepted = [0]
    start = time.perf_counter()
    deadline = start + seconds
    ended = [start]

    async def client(number: int) -> None:
        reader, writer = await asyncio.open_connection(target.hostname, target.port)
        n = number
        while time.perf_counter() < deadline:
            body = bodies[n % len(bodies)]
            n += clients
            sent = time.perf_counter()
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            try:
                reply = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in reply.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, StopIteration) as err:
                statuses[type(err).__name__] = statuses.get(type(err).__name__, 0) + 1
                writer.close()
                reader, writer = await asyncio.open_connection(target.hostname, target.port)
                continue
            done = time.perf_counter()
            status = reply.split(b" ", 2)[1].decode()
            statuses[status] = statuses.get(status, 0) + 1
            if status == "202":
                accepted[0] += per_request
            latencies.append((done - sent) * 1e3)
            ended[0] = max(ended[0], done)
        writer.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = ended[0] - start
    return {
        "requests": len(latencies),
        "accepted": accepted[0],
        "seconds": round(elapsed, 2),
        "events_per_s": round(accepted[0] / elapsed, 1) if elapsed > 0 else math.nan,
        "statuses": statuses,
        **_percentiles(latencies),
    }


def _run_burst(url: str, token: str, mode: str, clients: int, seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.events", "--url", url, "--token", token, "--mode", mode]
    cmd += ["--clients", str(clients), "--seconds", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="closed-loop load on POST /v1/events")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--mode", choices=("single", "batched"), required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover, uvloop is in the gateway's lock
        pass
    result = asyncio.run(_burst(args.url, args.token, args.mode, args.clients, args.seconds))
    times = os.times()
    result["load_generator_cpu_s"] = round(times.user + times.system, 2)
    print(json.dumps(result))  # noqa: T201 - read by the parent benchmark


# ------------------------------------------------------------------------------------------------
# The stack


@dataclass
class Stack:
    """The running benchmark stack."""

    url: str
    token: str
    worker_metrics: str
    settings: Any
    store: Any
    procs: dict[str, subprocess.Popen]

    def stream_lag(self) -> int:
        """Records the worker's group has not acked yet."""
        from serving.stream_worker.worker import GROUP
        from streams import open_stream

        stream = open_stream(self.settings)
        try:
            return stream.lag(GROUP)
        finally:
            stream.close()


@contextmanager
def stack(root: Path, console: Any) -> Iterator[Stack]:
    """redis-server, gold + Feast materialize, the gateway and the stream worker, all under `root`;
    their output goes to `root/processes.log`."""
    import httpx

    from jobs import feature_store as fs
    from serving.gateway.auth import dev_secret, mint_token
    from testsupport.feature_samples import day_stamp, write_sample_gold
    from towerflow.lake import Lake
    from towerflow.settings import Settings

    procs: dict[str, subprocess.Popen] = {}
    redis_port, port, metrics_port = _free_port(), _free_port(), _free_port()
    redis_cmd = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    redis_cmd += ["--appendonly", "no", "--daemonize", "no", "--dir", str(root)]
    procs["redis"] = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        settings = Settings(
            home=root / "home", redis_url=redis_url, feature_env="redis", redis_prefix=PREFIX, stream_backend="redis"
        )
        _wait(lambda: fs.redis_reachable(redis_url), 10, "redis-server")
        with console.status(f"gold tables ({USERS:,} users, {ITEMS:,} items), feast apply + materialize"):
            gold = write_sample_gold(Lake(settings.lake), users=USERS, items=ITEMS, days=1, embeddings=False)
            store = fs.feature_store(settings, "redis")
            fs.apply(store)
            fs.materialize(store, day_stamp(gold.days[-1]))
        env = {
            **os.environ,
            "TOWERFLOW_HOME": str(settings.home),
            "TOWERFLOW_REDIS_URL": redis_url,
            "TOWERFLOW_FEATURE_ENV": "redis",
            "TOWERFLOW_REDIS_PREFIX": PREFIX,
            "TOWERFLOW_STREAM_BACKEND": "redis",
            "TOWERFLOW_MODEL_SERVER_TARGET": f"127.0.0.1:{_free_port()}",  # none: the route needs no models
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        for name in ("TOWERFLOW_JWT_KEY", "KAFKA_BOOTSTRAP_SERVERS", "TOWERFLOW_KAFKA_BOOTSTRAP_SERVERS"):
            env.pop(name, None)
        log = (root / "processes.log").open("ab")
        gateway_cmd = [sys.executable, "-m", "uvicorn", "serving.gateway.main:create_app", "--factory"]
        gateway_cmd += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        gateway_cmd += ["--loop", "uvloop", "--http", "httptools"]
        procs["gateway"] = subprocess.Popen(gateway_cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        worker_cmd = [sys.executable, "-m", "towerflow.cli", "stream-worker", "--metrics-port", str(metrics_port)]
        procs["worker"] = subprocess.Popen(worker_cmd, env=env, stdout=log, stderr=log, start_new_session=True)
        token = mint_token(dev_secret(settings), subject="bench", scopes=["events:write", "recommend:any"])
        running = Stack(
            f"http://127.0.0.1:{port}", token, f"http://127.0.0.1:{metrics_port}/metrics", settings, store, procs
        )
        with console.status("starting the gateway and the stream worker"):
            _wait(lambda: httpx.get(f"{running.url}/healthz", timeout=2).status_code == 200, 120, "gateway")
            _wait(lambda: httpx.get(running.worker_metrics, timeout=2).status_code == 200, 120, "stream worker")
        yield running
    finally:
        for name in ("gateway", "worker", "redis"):
            proc = procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


# ------------------------------------------------------------------------------------------------
# Worker metrics


def worker_stats(url: str) -> dict[str, Any]:
    """Cumulative figures from the worker's /metrics: events by result, the event -> online
    histogram's buckets, count and sum, and per stage the seconds and batches."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"events": {}, "buckets": [], "lag_count": 0.0, "lag_sum": 0.0, "stages": {}}
    for family in text_string_to_metric_families(httpx.get(url, timeout=5).text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "towerflow_stream_events_total":
                out["events"][labels["result"]] = sample.value
            elif name == "towerflow_stream_event_to_online_seconds_bucket":
                out["buckets"].append((float(labels["le"]), sample.value))
            elif name == "towerflow_stream_event_to_online_seconds_count":
                out["lag_count"] = sample.value
            elif name == "towerflow_stream_event_to_online_seconds_sum":
                out["lag_sum"] = sample.value
            elif name in ("towerflow_stream_stage_seconds_sum", "towerflow_stream_stage_seconds_count"):
                kind = "seconds" if name.endswith("_sum") else "batches"
                out["stages"].setdefault(labels["stage"], {})[kind] = sample.value
    out["buckets"].sort()
    return out


def gateway_append(url: str) -> tuple[float, float]:
    """Cumulative seconds and requests of the gateway's `events_append` stage (its /metrics)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    seconds = requests = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.labels.get("stage") == "events_append":
                if sample.name == "towerflow_gateway_stage_seconds_sum":
                    seconds = sample.value
                elif sample.name == "towerflow_gateway_stage_seconds_count":
                    requests = sample.value
    return seconds, requests


def append_ms(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Mean ms per request in the `events_append` stage between two `gateway_append` readings."""
    requests = after[1] - before[1]
    return round((after[0] - before[0]) / requests * 1e3, 2) if requests else math.nan


def stats_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What the worker did between two `worker_stats` readings."""
    earlier = dict(before["buckets"])
    buckets = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after["buckets"]]
    count = after["lag_count"] - before["lag_count"]
    stages = {}
    for stage, fig in after["stages"].items():
        was = before["stages"].get(stage, {})
        batches = fig.get("batches", 0.0) - was.get("batches", 0.0)
        seconds = fig.get("seconds", 0.0) - was.get("seconds", 0.0)
        stages[stage] = {"batches": int(batches), "mean_ms": round(seconds / batches * 1e3, 1) if batches else math.nan}
    return {
        "landed": int(after["events"].get("landed", 0.0) - before["events"].get("landed", 0.0)),
        "observed": int(count),
        "mean_ms": round((after["lag_sum"] - before["lag_sum"]) / count * 1e3, 1) if count else math.nan,
        **{f"p{int(q * 100)}_ms": round(bucket_quantile(buckets, q) * 1e3, 1) for q in (0.5, 0.95, 0.99)},
        "stages": stages,
    }


# ------------------------------------------------------------------------------------------------
# The lag case: paced load + probes


async def _lag_case(running: Stack, rate: float, seconds: float, probes_per_s: float) -> dict[str, Any]:
    import httpx

    from features.reader import FastFeatureReader

    reader = FastFeatureReader(running.store)
    headers = {"Authorization": f"Bearer {running.token}"}
    rng = random.Random(3)
    statuses: dict[str, int] = {}
    post_ms: list[float] = []
    late_ms: list[float] = []
    lags: list[tuple[float, float]] = []  # (seconds into the case, lag ms)
    accepted_ms: list[float] = []
    unseen = [0]
    posted = [0]
    probe_users: asyncio.Queue[str] = asyncio.Queue()
    for n in range(PROBE_USERS):
        probe_users.put_nowait(f"probe-user-{n}")

    async with httpx.AsyncClient(base_url=running.url, headers=headers, timeout=10) as client:

        async def batch(scheduled: float, events: list[dict[str, Any]]) -> None:
            late_ms.append((time.perf_counter() - scheduled) * 1e3)
            sent = time.perf_counter()
            response = await client.post("/v1/events", json={"events": events})
            post_ms.append((time.perf_counter() - sent) * 1e3)
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            if response.status_code == 202:
                posted[0] += len(events)

        async def probe(number: int) -> None:
            user = await probe_users.get()
            item = f"probe-item-{number}"
            try:
                started = time.perf_counter()
                response = await client.post("/v1/events", json={"user_id": user, "item_id": item, "action": "click"})
                accepted_ms.append((time.perf_counter() - started) * 1e3)
                if response.status_code != 202:
                    statuses[f"probe {response.status_code}"] = statuses.get(f"probe {response.status_code}", 0) + 1
                    return
                posted[0] += 1
                while time.perf_counter() - started < PROBE_TIMEOUT_S:
                    recent = (await reader.user_features_async(user)).get("user_recent__last_10_items") or []
                    if recent and recent[0] == item:
                        lags.append((started - start, (time.perf_counter() - started) * 1e3))
                        return
                    await asyncio.sleep(PROBE_POLL_S)
                # Never seen: counted at the timeout (a lower bound), so it cannot flatter a percentile.
                lags.append((started - start, PROBE_TIMEOUT_S * 1e3))
                unseen[0] += 1
            finally:
                probe_users.put_nowait(user)

        async def sample_worker() -> None:
            """The worker's figures at the start and after each third of the case."""
            for k in range(4):
                await asyncio.sleep(max(0.0, start + k * seconds / 3 - time.perf_counter()))
                samples.append(await asyncio.to_thread(worker_stats, running.worker_metrics))

        batches_per_s = rate / PACED_BATCH
        samples: list[dict[str, Any]] = []
        start = time.perf_counter()
        tasks = [asyncio.create_task(sample_worker())]
        n_batch = n_probe = 0
        while True:
            next_batch = start + n_batch / batches_per_s
            next_probe = start + n_probe / probes_per_s + 0.5 / batches_per_s  # between batches
            scheduled = min(next_batch, next_probe)
            if scheduled - start >= seconds:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if scheduled == next_batch:
                events = [_event(rng) for _ in range(PACED_BATCH)]
                tasks.append(asyncio.create_task(batch(scheduled, events)))
                n_batch += 1
            else:
                tasks.append(asyncio.create_task(probe(n_probe)))
                n_probe += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    await reader.aclose()
    timed = [ms for _, ms in lags]
    thirds = [[ms for at, ms in lags if min(2, int(at * 3 // seconds)) == k] for k in range(3)]
    worker_thirds = [stats_delta(samples[k], samples[k + 1])["stages"] for k in range(3)]
    return {
        "posted": posted[0],
        "events_per_s": round(posted[0] / elapsed, 1),
        "probes": n_probe,
        "probes_unseen": unseen[0],
        **{f"lag_{k}": v for k, v in _percentiles(timed).items()},
        "lag_max_ms": round(max(timed), 1) if timed else math.nan,
        **{f"probe_post_{k}": v for k, v in _percentiles(accepted_ms).items()},
        **{f"batch_post_{k}": v for k, v in _percentiles(post_ms).items()},
        "sender_late_p99_ms": _percentiles(late_ms)["p99_ms"],
        "statuses": statuses,
        # As the day's bronze partition grows: does the lag drift?
        "lag_p95_ms_by_third": [_percentiles(third)["p95_ms"] for third in thirds],
        "lake_ms_by_third": [w.get("lake", {}).get("mean_ms", math.nan) for w in worker_thirds],
        "online_ms_by_third": [w.get("online", {}).get("mean_ms", math.nan) for w in worker_thirds],
    }


def _wait_drained(running: Stack, limit_s: float) -> tuple[float, int]:
    """Seconds until the worker has acked everything (at most `limit_s`), and what is left."""
    start = time.perf_counter()
    left = running.stream_lag()
    while left and time.perf_counter() - start < limit_s:
        time.sleep(0.25)
        left = running.stream_lag()
    return time.perf_counter() - start, left


# ------------------------------------------------------------------------------------------------
# The benchmark


def run() -> dict[str, object]:
    from rich.console import Console
    from rich.table import Table

    from bench import cpu_stalls

    console = Console()
    seconds, rate = _env("SECONDS", 60), _env("EVENTS_RATE", 1000)
    burst_s, clients = _env("EVENTS_BURST_S", 10), int(_env("EVENTS_CLIENTS", 16))
    drain_s, probes_per_s = _env("EVENTS_DRAIN_S", 30), _env("EVENTS_PROBES_PER_S", 5)
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp), console) as running:
        procs = running.procs
        with console.status("warm-up: a few batches and probes through the worker"):
            asyncio.run(_lag_case(running, 200, 3, 2))
            _wait_drained(running, 60)
        with console.status("CPU stalls of this machine (stack idle): spin per CPU, fixed 2 ms task"):
            stalls = cpu_stalls.probe()
        with console.status(f"lag: {rate:g} events/s for {seconds:g} s, {probes_per_s:g} probes/s"):
            cpu0, w0, g0 = _cpu_seconds(procs), worker_stats(running.worker_metrics), gateway_append(running.url)
            lag = asyncio.run(_lag_case(running, rate, seconds, probes_per_s))
            cpu1, w1, g1 = _cpu_seconds(procs), worker_stats(running.worker_metrics), gateway_append(running.url)
            lag["append_ms"] = append_ms(g0, g1)
            lag_drain_s, _ = _wait_drained(running, 60)
        worker_lag = stats_delta(w0, w1)
        lag_cpu = {
            "gateway_cpu_s_per_1k": per_thousand(cpu1["gateway"] - cpu0["gateway"], lag["posted"]),
            "worker_cpu_s_per_1k": per_thousand(cpu1["worker"] - cpu0["worker"], worker_lag["landed"]),
            "redis_cpu_s_per_1k": per_thousand(cpu1["redis"] - cpu0["redis"], lag["posted"]),
        }
        bursts: dict[str, dict[str, Any]] = {}
        for mode, n in (("single", clients), ("batched", BATCHED_CLIENTS)):
            with console.status(f"{mode}: {n} clients for {burst_s:g} s"):
                before, g0 = _cpu_seconds(procs), gateway_append(running.url)
                bursts[mode] = _run_burst(running.url, running.token, mode, n, burst_s)
                after, g1 = _cpu_seconds(procs), gateway_append(running.url)
                bursts[mode]["gateway_cpu_s_per_1k"] = per_thousand(
                    after["gateway"] - before["gateway"], bursts[mode]["accepted"]
                )
                bursts[mode]["append_ms"] = append_ms(g0, g1)
                bursts[mode]["worker_cpu_s"] = round(after["worker"] - before["worker"], 2)
        with console.status(f"the worker works through the backlog alone for {drain_s:g} s"):
            backlog = running.stream_lag()
            cpu2, w2, drain_start = _cpu_seconds(procs), worker_stats(running.worker_metrics), time.perf_counter()
            drained_s, left = _wait_drained(running, drain_s)
            cpu3, w3, drain_end = _cpu_seconds(procs), worker_stats(running.worker_metrics), time.perf_counter()
        moved = stats_delta(w2, w3)
        drain = {
            "backlog": backlog,
            "left": left,
            "seconds": round(drained_s, 2),
            "landed": moved["landed"],
            "events_per_s": round(moved["landed"] / (drain_end - drain_start), 1),
            "worker_cpu_s_per_1k": per_thousand(cpu3["worker"] - cpu2["worker"], moved["landed"]),
            "stages": moved["stages"],
        }
        stages_all = stats_delta({"buckets": [], "lag_count": 0, "lag_sum": 0, "events": {}, "stages": {}}, w3)

    table = Table(title="POST /v1/events and the stream worker (gateway, worker and Redis on this machine)")
    columns = ("case", "events/s", "p50 ms", "p95 ms", "p99 ms", "statuses", "gateway CPU s / 1k events", "append ms")
    for column in columns:
        table.add_column(column, justify="left" if column in ("case", "statuses") else "right")
    for mode, fig in bursts.items():
        what = f"{mode} ({clients if mode == 'single' else BATCHED_CLIENTS} clients), post latency"
        table.add_row(
            what,
            f"{fig['events_per_s']:,.0f}",
            *(f"{fig[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
            json.dumps(fig["statuses"]),
            f"{fig['gateway_cpu_s_per_1k']:.3f}",
            f"{fig['append_ms']:.2f}",
        )
    table.add_row(
        f"lag: event -> online, {lag['probes']} probes ({lag['probes_unseen']} unseen)",
        f"{lag['events_per_s']:,.0f}",
        *(f"{lag[f'lag_{k}']:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
        json.dumps(lag["statuses"]),
        f"{lag_cpu['gateway_cpu_s_per_1k']:.3f}",
        f"{lag['append_ms']:.2f}",
    )
    table.add_row(
        f"lag as the worker sees it (accepted -> pushed), {worker_lag['observed']:,} events, histogram",
        "",
        *(f"{worker_lag[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
        "",
        "",
        "",
    )
    table.add_row(
        f"worker alone on a backlog of {backlog:,} ({left:,} left after {drained_s:.0f} s)",
        f"{drain['events_per_s']:,.0f}",
        *([""] * 6),
    )
    console.print(table)
    lag_p95, lag_p99 = lag["lag_p95_ms"], lag["lag_p99_ms"]
    passed = targets(bursts["batched"]["events_per_s"], lag_p95, lag_p99)
    for name, ok in passed.items():
        console.print(f"target {name}: {'pass' if ok else 'FAIL'}")
    console.print(
        f"at {rate:g} events/s: CPU s per 1,000 events gateway {lag_cpu['gateway_cpu_s_per_1k']}, worker "
        f"{lag_cpu['worker_cpu_s_per_1k']}, Redis {lag_cpu['redis_cpu_s_per_1k']}; worker stages {worker_lag['stages']}"
        f"; drained {lag_drain_s:.1f} s after the load stopped",
        soft_wrap=True,
    )
    console.print(
        f"worker on the backlog: {drain['landed']:,} events at {drain['events_per_s']:,.0f}/s, "
        f"{drain['worker_cpu_s_per_1k']} CPU s per 1,000; stages {drain['stages']}",
        soft_wrap=True,
    )
    console.print(
        f"lag by third of the window: p95 {lag['lag_p95_ms_by_third']} ms; worker's lake merge "
        f"{lag['lake_ms_by_third']} ms and online update {lag['online_ms_by_third']} ms per batch",
        soft_wrap=True,
    )
    console.print(f"worker stages over the whole run: {stages_all['stages']}", soft_wrap=True)
    console.print(cpu_stalls.describe(stalls), soft_wrap=True)
    load = os.getloadavg()
    console.print(f"load average at the end (other work on this machine included): {load}")

    figures: dict[str, object] = {"lag_seconds": seconds, "lag_rate_eps": rate, "burst_seconds": burst_s}
    for mode, fig in bursts.items():
        figures.update({f"{mode}_{k}": v for k, v in fig.items()})
    figures["single_clients"], figures["batched_clients"] = clients, BATCHED_CLIENTS
    figures.update({k if k.startswith("lag_") else f"lag_{k}": v for k, v in lag.items()})
    figures.update({f"lag_{k}": v for k, v in lag_cpu.items()})
    figures["lag_drain_s"] = round(lag_drain_s, 2)
    figures.update({f"worker_lag_{k}": v for k, v in worker_lag.items()})
    figures.update({f"drain_{k}": v for k, v in drain.items()})
    figures["worker_stages_all"] = stages_all["stages"]
    figures.update({f"machine_{k}": v for k, v in stalls.items()})
    figures["loadavg_1m"] = round(load[0], 2)
    figures.update(passed)
    return figures


if __name__ == "__main__":
    main()
