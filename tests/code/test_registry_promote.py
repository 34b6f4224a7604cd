"""`models promote` / `rollback` run at the same time: each is one locked read-modify-write of
models.config, so `previous` is always the stable version the move replaced (empty files stand in
for SavedModels)."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from models import registry
from towerflow.model_config import list_versions, read_models_config

REPO = Path(__file__).resolve().parents[2]


def _registry(root: Path, versions: int) -> Path:
    """`versions` published pairs; stable 1, then stable promoted to 2 (so previous is 1)."""
    models_dir = root / "models"
    for version in range(1, versions + 1):
        staged = {}
        for model in registry.MODELS:
            folder = root / "staged" / str(version) / model
            folder.mkdir(parents=True)
            (folder / "saved_model.pb").write_text(f"{model} {version}")
            staged[model] = folder
        assert registry.publish(models_dir, staged, {"run": version}) == version
    registry.promote(models_dir, "retrieval", 2)
    return models_dir


def _lock_is_free(path: Path) -> bool:
    with Path(f"{path}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


# first move (paused after its first read of models.config), second move, and the outcomes of the
# two serial orders starting from stable 2, previous 1.
RACES = {
    "promote-promote": (
        ("promote", 3),
        ("promote", 1),
        [{"stable": 1, "previous": 3}, {"stable": 3, "previous": 1}],
    ),
    "rollback-promote": (
        ("rollback", None),
        ("promote", 3),
        [{"stable": 3, "previous": 1}, {"stable": 2, "previous": 3}],
    ),
}


def _move(models_dir: Path, move: tuple[str, int | None]) -> dict[str, int]:
    kind, version = move
    if kind == "rollback":
        return registry.rollback(models_dir, "retrieval", version)
    return registry.promote(models_dir, "retrieval", version)


@pytest.mark.parametrize("race", sorted(RACES))
def test_a_move_between_anothers_read_and_write_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, race: str
) -> None:
    """The first move stops right after reading models.config. If it holds the registry lock then
    (one transaction), the second waits for it; if it does not, the second runs to the end in that
    gap, which is where a read-then-write loses an update."""
    first, second, serial = RACES[race]
    models_dir = _registry(tmp_path, 3)
    config = registry.config_path(models_dir)
    read, resume = threading.Event(), threading.Event()
    real_read = registry.read_models_config

    def read_then_pause(path):
        entries = real_read(path)
        if threading.current_thread().name == "first" and not read.is_set():
            read.set()
            resume.wait(timeout=120)  # a guard against a hang, not part of the check
        return entries

    monkeypatch.setattr(registry, "read_models_config", read_then_pause)
    outcome: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("first", _move(models_dir, first)), name="first", daemon=True
    )
    thread.start()
    assert read.wait(timeout=120)
    if _lock_is_free(config):
        _move(models_dir, second)
        resume.set()
    else:
        resume.set()
        _move(models_dir, second)
    thread.join(timeout=120)
    assert not thread.is_alive()
    final = {k: v for k, v in registry.labels(models_dir, "retrieval").items() if k in ("stable", "previous")}
    assert final in serial, f"{final} is neither serial order's outcome {serial}"


#: One process's moves: random promotes and rollbacks, printing the labels each move left.
WORKER = """
import json, random, sys
from pathlib import Path
from models import registry
models_dir, seed, moves = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
seen = []
for _ in range(moves):
    model = rng.choice(registry.MODELS)
    if rng.random() < 0.4:
        seen.append(registry.rollback(models_dir, model))
    else:
        seen.append(registry.promote(models_dir, model, rng.randint(1, 5)))
print(json.dumps(seen))
"""


def test_processes_promoting_and_rolling_back_at_once_keep_labels_consistent(tmp_path: Path) -> None:
    models_dir = _registry(tmp_path, 5)
    registry.promote(models_dir, "ranking", 2)
    # Fresh interpreters, not forks: a fork of a test process that has loaded gRPC or TensorFlow
    # can crash in the child.
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(models_dir), str(seed), "25"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    seen = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0
        seen.append(json.loads(out))
    for labels in (label for worker in seen for label in worker):
        assert labels["stable"] != labels.get("previous"), labels
    entries = {e.name: e for e in read_models_config(registry.config_path(models_dir))}  # it parses
    assert set(entries) == set(registry.MODELS)
    for model, entry in entries.items():
        assert entry.labels["stable"] != entry.labels["previous"], entry.labels
        on_disk = list_versions(models_dir / model)
        for label, version in entry.labels.items():
            assert version in entry.policy.versions and version in on_disk, (model, label, version)


def test_promote_pair_moves_both_models_in_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models_dir = _registry(tmp_path, 3)
    registry.promote(models_dir, "retrieval", 1)  # stable 1 again for both models
    writes = []
    real = registry.write_models_config
    monkeypatch.setattr(registry, "write_models_config", lambda path, entries: writes.append(1) or real(path, entries))

    moved = registry.promote_pair(models_dir, {"retrieval": 3, "ranking": 3})

    assert len(writes) == 1
    assert moved["retrieval"]["stable"] == moved["ranking"]["stable"] == 3
    assert moved["retrieval"]["previous"] == moved["ranking"]["previous"] == 1
    assert registry.labels(models_dir, "ranking") == {"stable": 3, "canary": 3, "previous": 1}


def test_promote_pair_moves_nothing_when_a_version_is_missing(tmp_path: Path) -> None:
    models_dir = _registry(tmp_path, 2)
    before = {m: registry.labels(models_dir, m) for m in registry.MODELS}
    with pytest.raises(registry.RegistryError, match="ranking version 9 is not published"):
        registry.promote_pair(models_dir, {"retrieval": 2, "ranking": 9})
    assert {m: registry.labels(models_dir, m) for m in registry.MODELS} == before
