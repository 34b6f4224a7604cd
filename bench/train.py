"""Training throughput: `towerflow bench train`.

Times the two training steps that use TensorFlow - `retrieval_stage` (the shifted two-tower
model, its labelled candidates for the ranker, then the two-tower model that ships) and
`ranking_stage` (the DCN ranker) - on training sets a pipeline run already built
(`runs/<date>/training_set/`, written by the `training_set` task), each in a fresh process:
wall time per stage, examples/s per fit (median over epochs, from the fits' own records) and
the process's peak resident memory (sampled every 0.2 s; and the child's own peak by the end of the
retrieval stage).

Which training sets: `TOWERFLOW_BENCH_TRAIN_RUNS`, comma-separated `name=run folder` pairs
(default `online_retail=$TOWERFLOW_HOME/runs/2011-12-10`, what
`towerflow pipeline run --date 2011-12-10 --holdout-days 39` leaves after
`towerflow data import online-retail ...`). A missing folder is reported, not measured.

The 10M-event synthetic training set (docs/performance.md figures), in its own `TOWERFLOW_HOME`:

    towerflow data synth --users 190000 --items 50000 --days 30 --start 2025-01-01   # 10.4M events
    towerflow pipeline etl --start 2025-01-01 --end 2025-01-30 --holdout-days 7
    towerflow features apply
    towerflow train --date 2025-01-31                     # its first step writes the training set
    TOWERFLOW_BENCH_TRAIN_RUNS=synthetic_10m=$TOWERFLOW_HOME/runs/2025-01-31 towerflow bench train
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def _runs() -> dict[str, Path]:
    from towerflow.settings import get_settings

    spec = os.environ.get("TOWERFLOW_BENCH_TRAIN_RUNS")
    if not spec:
        return {"online_retail": get_settings().home / "runs" / "2011-12-10"}
    pairs = (part.split("=", 1) for part in spec.split(",") if part.strip())
    return {name.strip(): Path(path.strip()) for name, path in pairs}


def _child(run_dir: str) -> None:  # pragma: no cover - the measured process
    from models.lifecycle import load_training_set
    from models.train import TrainParams, ranking_stage, retrieval_stage
    from towerflow.settings import get_settings

    ts = load_training_set(Path(run_dir) / "training_set")
    params = TrainParams(seed=get_settings().train_seed)
    quiet = lambda _: None  # noqa: E731 - the parent prints the table
    start = time.perf_counter()
    stage = retrieval_stage(ts, params, quiet)
    retrieval_s = time.perf_counter() - start
    retrieval_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    start = time.perf_counter()
    _, ranking_history = ranking_stage(ts, stage.candidates, params, quiet)
    ranking_s = time.perf_counter() - start

    def rate(history: list[dict[str, float]]) -> float:
        return round(statistics.median(h["examples_per_s"] for h in history), 1) if history else 0.0

    def last(history: list[dict[str, float]], key: str) -> float | None:
        """A fit's figure after its last epoch, so a faster fit shows it still learns as well:
        `auc` is over the epoch; TFRS reports `loss` of the last batch only (noisy)."""
        return round(history[-1][key], 4) if history and key in history[-1] else None

    out = {
        "examples": int(ts.examples),
        "retrieval_rows_shifted": len(ts.before_shift(["user_id"])),  # not a copy of the feature lists
        "retrieval_rows": len(ts.full),
        "ranking_rows": int(stage.candidates.labels.size),
        "retrieval_stage_seconds": round(retrieval_s, 1),
        "ranking_stage_seconds": round(ranking_s, 1),
        "retrieval_examples_per_s": rate(stage.model.history),
        "ranking_examples_per_s": rate(ranking_history),
        "retrieval_epochs": len(stage.model.history),
        "ranking_epochs": len(ranking_history),
        "retrieval_stage_peak_rss_mb": round(retrieval_peak_mb),
        "retrieval_shifted_last_loss": last(stage.shifted_history, "loss"),
        "retrieval_last_loss": last(stage.model.history, "loss"),
        "ranking_last_loss": last(ranking_history, "loss"),
        "ranking_last_auc": last(ranking_history, "auc"),
    }
    print("TRAIN_DONE", json.dumps(out), flush=True)  # noqa: T201 - read by the parent


def _measure(run_dir: Path) -> dict[str, Any]:
    from bench.etl import _tree_rss_mb

    log = run_dir.parent / "bench-train.stderr"
    with log.open("w") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.train", str(run_dir)], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        peak = 0.0

        def sample() -> None:
            nonlocal peak
            while proc.poll() is None:
                peak = max(peak, _tree_rss_mb(proc.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        figures: dict[str, Any] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("TRAIN_DONE"):
                figures = json.loads(line.split(" ", 1)[1])
        proc.wait()
        sampler.join()
    if proc.returncode != 0 or not figures:
        raise RuntimeError(f"training benchmark child failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    return {**figures, "wall_seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(peak)}


def run() -> dict[str, object]:
    console = Console()
    table = Table(title="training: retrieval stage (2 two-tower fits + candidates) and ranking stage (DCN)")
    columns = ("training set", "positives", "retrieval s", "retrieval ex/s", "ranking rows", "ranking s")
    for column in (*columns, "ranking ex/s", "peak RSS MiB (retrieval stage)"):
        table.add_column(column, justify="left" if column == "training set" else "right")
    figures: dict[str, object] = {}
    for name, run_dir in _runs().items():
        if not (run_dir / "training_set" / "manifest.json").is_file():
            console.print(f"[yellow]{name}: no training set in {run_dir} (run the pipeline for it first)[/]")
            figures[f"{name}_missing"] = str(run_dir)
            continue
        with console.status(f"{name}: training from {run_dir / 'training_set'}"):
            fig = _measure(run_dir)
        figures |= {f"{name}_{key}": value for key, value in fig.items()}
        table.add_row(
            name,
            f"{fig['examples']:,}",
            f"{fig['retrieval_stage_seconds']:.1f}",
            f"{fig['retrieval_examples_per_s']:,.0f}",
            f"{fig['ranking_rows']:,}",
            f"{fig['ranking_stage_seconds']:.1f}",
            f"{fig['ranking_examples_per_s']:,.0f}",
            f"{fig['peak_rss_mb']:,} ({fig['retrieval_stage_peak_rss_mb']:,})",
        )
    console.print(table)
    return figures


if __name__ == "__main__":  # pragma: no cover - the benchmark's child process
    _child(sys.argv[1])
