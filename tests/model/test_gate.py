"""Evaluation against servable baselines, and the gate: a worse candidate never replaces
production, and a model that loses to a baseline is not what serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.gate import GatePolicy
from models.lifecycle import gate_run, publish_run
from models.registry import labels, list_models
from models.runs import RunPaths

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def eval_data(world):
    return world.eval_data()


@pytest.fixture(scope="module")
def shuffled_models(world):
    """A deliberately weak pair: trained on examples whose items were shuffled."""
    from models.train import TrainingData, TrainParams, train

    shuffled = world.examples.copy()
    shuffled["item_id"] = np.random.default_rng(0).permutation(shuffled["item_id"].to_numpy())
    params = TrainParams(
        retrieval_epochs=2, ranking_epochs=1, dim=32, batch_size=256, rank_candidates=1000, rank_rows=120, seed=5
    )
    return train(TrainingData(shuffled, world.catalog, world.lookup), world.cutoff, 6, params)


def _stage(run: RunPaths, staged: dict[str, Path], fingerprint: str) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    for model, path in staged.items():
        (run.staged / model).parent.mkdir(parents=True, exist_ok=True)
        if not (run.staged / model).exists():
            (run.staged / model).symlink_to(path, target_is_directory=True)
    run.record.write_text(json.dumps({"fingerprint": fingerprint, "training": {}}))


def _evaluate(run: RunPaths, data, production) -> dict:
    from models.evaluate import evaluate, stage_baselines, write_report

    baselines = stage_baselines(data, run.baselines)
    staged = {"retrieval": run.staged / "retrieval", "ranking": run.staged / "ranking"}
    report = evaluate(data, staged, production, baselines)
    write_report(report, run.evaluation, "test")
    return report


def test_the_model_beats_popularity_and_reports_every_baseline(trained, eval_data, tmp_path: Path) -> None:
    from models.baselines import BASELINES

    run = RunPaths(tmp_path / "run")
    _stage(run, trained.staged, "good")
    report = _evaluate(run, eval_data, None)
    for variant in ("all", "new"):
        assert {"two_stage", "retrieval", *BASELINES} == set(report["metrics"][variant])
        for name, bounds in report["intervals"][variant].items():
            low, high = bounds["recall@100"]
            assert low <= report["metrics"][variant][name]["recall@100"] <= high, (variant, name)
        versus = report["versus"][variant]["two_stage"]["best_baseline"]["recall@10"]
        assert versus["name"] in BASELINES and versus["interval"][0] <= versus["difference"] <= versus["interval"][1]
    two_stage = report["metrics"]["all"]["two_stage"]
    assert two_stage["recall@100"] > report["metrics"]["all"]["popular"]["recall@100"]
    # In `new` the user's own items are left out, so repeat-then-X serves X's list.
    for with_history, alone in (("repeat_purchase", "popular"), ("repeat_als", "als")):
        assert report["metrics"]["new"][with_history]["recall@10"] == pytest.approx(
            report["metrics"]["new"][alone]["recall@10"], abs=0.02
        )
    html = (run.evaluation / "evaluation.html").read_text()
    assert "Recall@K" in html and "data:image/png;base64," in html and "bootstrap" in html


def test_a_worse_candidate_is_rejected_and_production_stays(
    trained, shuffled_models, eval_data, tmp_path: Path
) -> None:
    from models.export import export

    models_dir = tmp_path / "models"
    good = RunPaths(tmp_path / "good")
    _stage(good, trained.staged, "good")
    _evaluate(good, eval_data, None)
    assert gate_run(good, GatePolicy(), quality_passed=True)["publish"] is True
    published = publish_run(models_dir, good)
    assert published["published"] is True and published["version"] == 1
    assert labels(models_dir, "retrieval") == {"stable": 1, "canary": 1}

    bad_models = shuffled_models
    bad = RunPaths(tmp_path / "bad")
    bad.root.mkdir()
    export(bad_models, bad.staged, eval_data.cutoff, {"fingerprint": "bad"})
    bad.record.write_text(json.dumps({"fingerprint": "bad", "training": {}}))
    from models.registry import labelled_dirs

    report = _evaluate(bad, eval_data, labelled_dirs(models_dir, "stable"))
    decision = gate_run(bad, GatePolicy(), quality_passed=True)
    assert decision["publish"] is False
    metrics = report["metrics"]["all"]
    assert metrics["two_stage"]["recall@100"] < metrics["production"]["recall@100"] == decision["production"]
    assert decision["recommender"] != "two_stage"  # the shuffled model is not even the best choice
    assert publish_run(models_dir, bad)["published"] is False
    assert [i.version for i in list_models(models_dir) if i.model == "retrieval"] == [1]
    assert labels(models_dir, "retrieval") == {"stable": 1, "canary": 1}


def test_a_weak_model_gives_way_to_the_best_baseline_which_says_so(shuffled_models, eval_data, tmp_path) -> None:
    from models.baselines import BASELINES
    from models.export import export
    from scoring.local import SavedModelPair

    models_dir = tmp_path / "models"
    weak = RunPaths(tmp_path / "weak")
    weak.root.mkdir()
    export(shuffled_models, weak.staged, eval_data.cutoff, {"fingerprint": "weak"})
    weak.record.write_text(json.dumps({"fingerprint": "weak", "training": {}}))
    report = _evaluate(weak, eval_data, None)
    decision = gate_run(weak, GatePolicy(), quality_passed=True)
    assert decision["publish"] is True and decision["recommender"] in BASELINES, decision
    for variant in ("all", "new"):
        best_name, best_value = decision["per_variant"][variant]["best_baseline"]
        assert report["metrics"][variant][decision["recommender"]]["recall@100"] >= 0.9 * best_value, best_name
        assert report["metrics"][variant]["two_stage"]["recall@100"] < best_value
    published = publish_run(models_dir, weak)
    assert published["recommender"] == decision["recommender"]
    pair = SavedModelPair({m: models_dir / m / str(published["version"]) for m in ("retrieval", "ranking")})
    answer = pair.predict(
        "ranking",
        {"item_id": np.array([[b"x"]], dtype=object), "retrieval_score": np.array([[1.0]], np.float32)},
    )
    assert answer["recommender"].tolist() == [decision["recommender"].encode()]


def test_bad_data_blocks_publishing_even_when_forced(trained, eval_data, tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    _stage(run, trained.staged, "good")
    _evaluate(run, eval_data, None)
    decision = gate_run(run, GatePolicy(), quality_passed=False, force=True)
    assert decision["publish"] is False and "quality" in decision["reason"]
    assert publish_run(tmp_path / "models", run)["published"] is False
    assert not (tmp_path / "models").exists() or list_models(tmp_path / "models") == []


def test_publishing_the_same_run_twice_adds_no_version(trained, eval_data, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    run = RunPaths(tmp_path / "run")
    _stage(run, trained.staged, "same")
    _evaluate(run, eval_data, None)
    gate_run(run, GatePolicy(), quality_passed=True)
    assert publish_run(models_dir, run)["version"] == 1
    again = publish_run(models_dir, run)
    assert again["published"] is False and again["version"] == 1
