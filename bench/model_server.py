"""Model server latency: Predict over gRPC loopback against `towerflow model-server` (its own
process, as TF Serving would be) vs the same signature called in process, one request at a time.

Models (testsupport.toy_models, built in a temp folder):
- retrieval: 100k items x 64 dims, brute-force matmul + top_k inside the SavedModel, one user,
  top 100 and top 1000 (the gateway asks for 1000);
- ranking: one user x 1000 candidate ids.
Columns: `in_process` calls the concrete signature function with ready tensors; `grpc_stub` sends
a prebuilt PredictRequest over the raw gRPC call; `grpc_client` is `ModelClient.predict`
(numpy in, numpy out: what the gateway pays).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ITEMS, DIM, CANDIDATES = 100_000, 64, 1000
WARMUP, REQUESTS = 50, 500


def _percentiles(fn, n: int = REQUESTS) -> dict[str, float]:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    p50, p95, p99 = np.percentile(np.array(times) * 1e3, [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(base: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, "-m", "towerflow.cli", "model-server", "--port", str(port), "--host", "127.0.0.1"]
    cmd += ["--model-base", str(base), "--poll-seconds", "30"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run() -> dict[str, object]:
    import tensorflow as tf

    from serving.tfs_client import ModelClient, predict_request
    from testsupport import toy_models
    from towerflow import model_config as mc

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "models"
        toy_models.save_retrieval(base / "retrieval", 1, num_items=ITEMS, dim=DIM, k=100, num_users=10_000)
        toy_models.save_retrieval(base / "retrieval_k1000", 1, num_items=ITEMS, dim=DIM, k=1000, num_users=10_000)
        toy_models.save_ranking(base / "ranking", 1, dim=DIM, buckets=ITEMS, num_users=10_000)
        names = ["retrieval", "retrieval_k1000", "ranking"]
        mc.write_models_config(base / "models.config", [mc.ModelEntry.under(base, n) for n in names])
        port = _free_port()
        server = _start_server(base, port)
        try:
            cases = {
                "retrieval": {"user_id": np.array([b"user-42"], dtype=object)},
                "retrieval_k1000": {"user_id": np.array([b"user-42"], dtype=object)},
                "ranking": {
                    "user_id": np.array([b"user-42"], dtype=object),
                    "candidate_ids": np.array([[s.encode() for s in toy_models.item_ids(CANDIDATES)]], dtype=object),
                },
            }
            figures: dict[str, object] = {}
            client = ModelClient(f"127.0.0.1:{port}", timeout=10)
            for name in names:
                client.wait_until_available(name, timeout=180)
            for name, inputs in cases.items():
                fn = tf.saved_model.load(str(base / name / "1")).signatures["serving_default"]
                tensors = {k: tf.constant(v) for k, v in inputs.items()}
                figures[f"{name}_in_process"] = _percentiles(lambda fn=fn, t=tensors: fn(**t))
                request = predict_request(name, inputs)
                call = client._call["Predict"]  # the unary call itself: no numpy either way
                figures[f"{name}_grpc_stub"] = _percentiles(lambda r=request, c=call: c(r, timeout=10))
                figures[f"{name}_grpc_client"] = _percentiles(lambda n=name, i=inputs, c=client: c.predict(n, i))
            client.close()
        finally:
            server.terminate()
            try:
                server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.communicate()
    table = Table(
        title=f"Predict latency, {REQUESTS} sequential calls "
        f"(retrieval {ITEMS:,} x {DIM}; ranking {CANDIDATES} candidates)"
    )
    for column in ("case", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for case, stats in figures.items():
        table.add_row(case, *(f"{stats[k]:.3f}" for k in ("p50_ms", "p95_ms", "p99_ms")))
    Console().print(table)
    return {f"{case}_{k}": v for case, stats in figures.items() for k, v in stats.items()}
