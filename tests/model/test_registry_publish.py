"""Publishing a retrieval + ranking pair: one manifest per version, both models or neither visible
in `models.config`, and a publish retried after a crash at any step finishes what the crashed one
started. Version folders are only checked for their saved_model.pb, so small files stand in for
SavedModels."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from models import registry
from models.lifecycle import publish_run
from models.runs import RunPaths
from towerflow.model_config import from_proto, parse

MODELS = ("retrieval", "ranking")


class Crash(Exception):
    """The worker dies here."""


def _run(root: Path, fingerprint: str) -> RunPaths:
    """A run folder as the gate leaves it: staged pair, run record, evaluation, a yes."""
    run = RunPaths(root)
    for model in MODELS:
        folder = run.staged / model
        (folder / "variables").mkdir(parents=True)
        (folder / "saved_model.pb").write_text(f"{model} {fingerprint}")
        (folder / "variables" / "variables.index").write_text(fingerprint)
    run.record.write_text(json.dumps({"fingerprint": fingerprint, "run_date": root.name, "training": {}}))
    run.decision.write_text(json.dumps({"publish": True, "reason": "better than production"}))
    run.evaluation.mkdir()
    metrics = {v: {"two_stage": {"recall@100": 0.5}} for v in ("all", "new")}
    (run.evaluation / "evaluation.json").write_text(json.dumps({"metrics": metrics}))
    return run


def _pairs_whole(models_dir: Path, text: str) -> None:
    """What a reader of this models.config sees: both models' versions and labels, or neither."""
    found = {e.name: e for e in from_proto(parse(text))}
    if not found:
        return
    assert set(found) == set(MODELS), f"only {set(found)} in models.config"
    retrieval, ranking = found["retrieval"], found["ranking"]
    assert retrieval.policy == ranking.policy, f"policies differ: {retrieval.policy} vs {ranking.policy}"
    assert dict(retrieval.labels) == dict(ranking.labels), f"labels differ: {retrieval.labels} vs {ranking.labels}"
    for label, version in retrieval.labels.items():
        assert version in retrieval.policy.versions, f"{label} points at version {version}, which is not loaded"


@contextmanager
def _durable_steps(
    models_dir: Path, crash_at: int = -1, before: bool = False, whole_pairs: bool = False
) -> Iterator[list[str]]:
    """Count the publish's durable steps (renames into `models_dir`: version folders, models.config,
    manifests) and raise `Crash` just before or just after step `crash_at`; with `whole_pairs`,
    check every models.config about to become visible."""
    steps: list[str] = []
    root = os.path.abspath(models_dir)

    def wrap(real: Callable) -> Callable:
        def step(src, dst, *args, **kwargs):
            if not os.path.abspath(dst).startswith(root):
                return real(src, dst, *args, **kwargs)
            index = len(steps)
            steps.append(f"{real.__name__} -> {os.path.relpath(dst, root)}")
            if whole_pairs and Path(dst).name == "models.config":
                _pairs_whole(models_dir, Path(src).read_text())
            if index == crash_at and before:
                raise Crash(steps[-1])
            real(src, dst, *args, **kwargs)
            if index == crash_at:
                raise Crash(steps[-1])

        return step

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "rename", wrap(os.rename))
        patch.setattr(os, "replace", wrap(os.replace))
        yield steps


def _snapshot(models_dir: Path) -> dict[str, str]:
    """Every file a reader may look at (temp files and locks aside), with the folder's own path
    written as <models> so two registries compare."""
    out = {}
    for path in sorted(models_dir.rglob("*")):
        rel = path.relative_to(models_dir)
        if any(part.startswith(".") for part in rel.parts) or path.suffix == ".lock":
            continue
        text = path.read_text() if path.is_file() else "<folder>"
        out[str(rel)] = text.replace(str(models_dir.resolve()), "<models>").replace(str(models_dir), "<models>")
    return out


class Waiter:
    """Stands in for the model server: records (model, version) and checks that the version is in
    the load policy and, on a first attempt, that no label points at it yet; fails the first
    `failures` calls, as a timeout would."""

    def __init__(self, models_dir: Path, failures: int = 0, first_attempt: bool = True) -> None:
        self.models_dir, self.failures, self.first_attempt, self.calls = models_dir, failures, first_attempt, []

    def __call__(self, model: str, version: int) -> bool:
        self.calls.append((model, version))
        entry = registry.entries(self.models_dir)[model]
        assert version in entry.policy.versions
        assert not self.first_attempt or version not in entry.labels.values()
        if self.failures:
            self.failures -= 1
            raise TimeoutError(f"{model} version {version} is not AVAILABLE")
        return True


def _registry(root: Path, earlier: bool) -> Path:
    """An empty registry, or one where an earlier run's pair is already stable."""
    models_dir = root / "models"
    if earlier:
        assert publish_run(models_dir, _run(root / "2025-01-01", "fp-first"))["version"] == 1
    return models_dir


@pytest.mark.parametrize("earlier", [False, True], ids=["first-publish", "onto-stable"])
def test_a_publish_makes_one_manifest_and_never_shows_half_a_pair(tmp_path: Path, earlier: bool) -> None:
    models_dir = _registry(tmp_path, earlier)
    waiter = Waiter(models_dir)
    with _durable_steps(models_dir, whole_pairs=True) as steps:
        result = publish_run(models_dir, _run(tmp_path / "2025-01-02", "fp-second"), waiter)
    version = 2 if earlier else 1
    assert result == {"published": True, "version": version, "recommender": "two_stage"}
    assert any(s.endswith("models.config") for s in steps)
    assert sorted(waiter.calls) == sorted((m, version) for m in MODELS)

    manifest = json.loads((models_dir / "publications" / f"{version}.json").read_text())
    assert manifest["version"] == version and manifest["state"] == "published"
    assert manifest["models"] == dict.fromkeys(MODELS, version)
    assert manifest["fingerprint"] == "fp-second" and manifest["metadata"]["fingerprint"] == "fp-second"
    assert registry.publications(models_dir)[-1] == manifest
    expected = {"stable": 1, "canary": version} if earlier else {"stable": 1, "canary": 1}
    for model in MODELS:
        assert registry.labels(models_dir, model) == expected
        meta = registry.metadata(models_dir, model, version)
        assert meta["fingerprint"] == "fp-second" and meta["model"] == model and meta["version"] == version


@pytest.mark.parametrize("earlier", [False, True], ids=["first-publish", "onto-stable"])
def test_a_publish_retried_after_a_crash_at_any_step_ends_as_a_clean_one(tmp_path: Path, earlier: bool) -> None:
    clean_dir = _registry(tmp_path / "clean", earlier)
    with _durable_steps(clean_dir) as steps:
        clean = publish_run(clean_dir, _run(tmp_path / "clean" / "2025-01-02", "fp-second"), Waiter(clean_dir))
    expected = _snapshot(clean_dir)

    # Each durable step, crashed just before it and just after it; and a model server that does
    # not report the version AVAILABLE in time once.
    crashes = [(i, before, 0) for i in range(len(steps)) for before in (True, False)] + [(-1, False, 1)]
    wrong = []
    for n, (crash_at, before, wait_failures) in enumerate(crashes):
        root = tmp_path / f"crash-{n}"
        models_dir = _registry(root, earlier)
        run = _run(root / "2025-01-02", "fp-second")
        name = (
            "the wait timed out"
            if wait_failures
            else f"crashed {'before' if before else 'after'} step {crash_at} ({steps[crash_at]})"
        )
        try:
            with _durable_steps(models_dir, crash_at, before):
                publish_run(models_dir, run, Waiter(models_dir, wait_failures))
        except (Crash, TimeoutError):
            pass
        else:
            wrong.append(f"{name}: no crash")
            continue
        again = publish_run(models_dir, run, Waiter(models_dir, first_attempt=False))
        if again.get("version") != clean["version"]:
            wrong.append(f"{name}: the retry gave version {again.get('version')}, a clean publish {clean['version']}")
        got = _snapshot(models_dir)
        if got != expected:
            diff = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
            wrong.append(f"{name}: after the retry these differ from a clean publish: {diff}")
        leftovers = [str(p.relative_to(models_dir)) for p in models_dir.rglob(".tmp*")]
        if leftovers:
            wrong.append(f"{name}: temp folders left: {leftovers}")
    assert not wrong, "\n".join(wrong)


def test_publish_without_a_fingerprint_resumes_by_content(tmp_path: Path) -> None:
    """`registry.publish` called directly (no fingerprint in the metadata) still resumes its own
    partial publication and gives a different pair the next number."""
    models_dir = tmp_path / "models"
    first = _run(tmp_path / "a", "x")
    staged = {m: first.staged / m for m in MODELS}
    with pytest.raises(Crash), _durable_steps(models_dir, crash_at=2):
        registry.publish(models_dir, staged, {"run_date": "2025-01-01"})
    assert registry.publish(models_dir, staged, {"run_date": "2025-01-01"}) == 1
    other = _run(tmp_path / "b", "y")
    assert registry.publish(models_dir, {m: other.staged / m for m in MODELS}, {"run_date": "2025-01-02"}) == 2
    assert [p["state"] for p in registry.publications(models_dir)] == ["published", "published"]
