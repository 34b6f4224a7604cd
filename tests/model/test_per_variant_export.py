"""A pair published per variant: each row of a batch is answered by the pair its list variant
chose, exactly as that pair answers alone, and the whole survives a save and a load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.baselines import TrainInteractions, fit_baselines
from models.features import (
    HISTORY_COUNTS,
    HISTORY_ITEMS,
    HISTORY_LAST_DAY,
    HISTORY_LEN,
    LIST_VARIANT,
    REQUEST_DAY,
    USER_ID,
)
from scoring.context import variant_code

N_USERS, N_ITEMS = 40, 30
CHOICE = {"all": "repeat_purchase", "new": "item_knn", "unseen": "popular"}


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    from models.export import export_baselines

    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(N_USERS), 6)
    items = np.where(users < N_USERS // 2, rng.integers(0, 15, len(users)), rng.integers(15, N_ITEMS, len(users)))
    data = TrainInteractions(users, items, rng.uniform(0, 30, len(users)), np.ones(len(users)), N_USERS, N_ITEMS)
    out = tmp_path_factory.mktemp("baselines")
    item_ids = [f"i{i}" for i in range(N_ITEMS)]
    return export_baselines(fit_baselines(data), item_ids, [f"u{u}" for u in range(N_USERS)], out, {})


def _batch(variants: list[str]) -> dict[str, np.ndarray]:
    n = len(variants)
    history = [
        [f"i{(3 * row + j) % N_ITEMS}".encode() for j in range(4)] + [b""] * (HISTORY_LEN - 4) for row in range(n)
    ]
    return {
        USER_ID: np.array([f"u{row}".encode() for row in range(n)], dtype=object),
        HISTORY_ITEMS: np.array(history, dtype=object),
        HISTORY_COUNTS: np.array([[2.0, 1.0, 3.0, 1.0] + [0.0] * (HISTORY_LEN - 4)] * n, np.float32),
        HISTORY_LAST_DAY: np.array([[100.0, 101.0, 99.0, 102.0] + [0.0] * (HISTORY_LEN - 4)] * n, np.float32),
        REQUEST_DAY: np.full(n, 105.0, np.float32),
        LIST_VARIANT: np.array([variant_code(v) for v in variants], np.int64),
    }


def _call(signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    specs = signature.structured_input_signature[1]
    return {
        k: v.numpy()
        for k, v in signature(**{n: tf.constant(inputs[n], dtype=s.dtype) for n, s in specs.items()}).items()
    }


def test_each_row_is_answered_by_its_variants_pair(staged, tmp_path: Path) -> None:
    import tensorflow as tf

    from models.export import save_per_variant

    pairs = {v: staged[name] for v, name in CHOICE.items()}
    dirs = save_per_variant(pairs, CHOICE, tmp_path / "pv", {"run": "test"})
    retrieval = tf.saved_model.load(str(dirs["retrieval"])).signatures["serving_default"]
    ranking = tf.saved_model.load(str(dirs["ranking"])).signatures["serving_default"]
    variants = ["all", "new", "unseen", "new", "all"]
    batch = _batch(variants)
    got = _call(retrieval, batch)
    catalog = [i.decode() for i in tf.saved_model.load(str(dirs["retrieval"])).item_ids.numpy()]
    for row, variant in enumerate(variants):
        alone = tf.saved_model.load(str(staged[CHOICE[variant]]["retrieval"])).signatures["serving_default"]
        want = _call(alone, {n: v[row : row + 1] for n, v in batch.items()})
        assert got["item_ids"][row].tolist() == want["item_ids"][0].tolist()
        np.testing.assert_allclose(got["scores"][row], want["scores"][0])
        rows = got["item_rows"][row]
        assert [catalog[r] for r in rows] == [i.decode() for i in got["item_ids"][row]]

    ranked = _call(ranking, {**batch, "item_id": got["item_ids"], "retrieval_score": got["scores"]})
    np.testing.assert_allclose(ranked["scores"], got["scores"])  # baselines keep retrieval's order
    assert [r.decode() for r in ranked["recommender"]] == [CHOICE[v] for v in variants]


def test_a_per_variant_pair_needs_every_variant(staged, tmp_path: Path) -> None:
    from models.export import save_per_variant

    with pytest.raises(ValueError, match="a choice for each of all, new, unseen"):
        save_per_variant({"all": staged["popular"]}, {"all": "popular"}, tmp_path / "pv", {})


def _random_inputs(specs, n: int, item_ids: list[str], seed: int, width: int = 8) -> dict[str, np.ndarray]:
    """Every signature input for `n` rows (`width` where a dimension is open): item ids from the
    catalog for strings, small numbers else."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in specs.items():
        shape = [n, *[width if d is None else d for d in spec.shape.as_list()[1:]]]
        if spec.dtype == tf.string:
            out[name] = rng.choice(np.array([i.encode() for i in item_ids], dtype=object), shape)
        elif spec.dtype.is_integer:
            out[name] = rng.integers(0, 7, shape).astype(spec.dtype.as_numpy_dtype)
        else:
            out[name] = rng.uniform(0, 5, shape).astype(np.float32)
    return out


def _assert_same_list(ids: np.ndarray, scores: np.ndarray, want_ids: np.ndarray, want_scores: np.ndarray) -> None:
    """The same scored list up to float32 noise: a batch and a single row sum in different orders,
    so near-equal scores may swap places (or trade the last place), and nothing else may differ."""
    # the noise scales with the row's largest score (ALS scores on random inputs are large)
    tol = 1e-5 * float(np.abs(want_scores).max()) + 1e-6
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=tol)
    want = dict(zip(want_ids.tolist(), want_scores.tolist(), strict=True))
    for item, score in zip(ids.tolist(), scores.tolist(), strict=True):
        expected = want.get(item, float(want_scores[-1]))  # absent: it tied for the last place
        assert abs(score - expected) <= tol, (item, score, expected)
    assert len(set(ids.tolist())) == len(ids)


@pytest.mark.training
def test_a_trained_pair_and_a_baseline_share_one_published_pair(world, trained, tmp_path: Path) -> None:
    """`all` served by the trained two-stage pair, `new` by its retrieval alone, `unseen` by ALS:
    rows route to their parts, and the ranker scores only the `all` rows."""
    import tensorflow as tf

    from models.evaluate import stage_baselines, train_interactions
    from models.export import passthrough_module, save, save_per_variant

    baselines = stage_baselines(train_interactions(world.examples, world.catalog, world.cutoff), tmp_path / "b")
    alone = {
        "retrieval": trained.staged["retrieval"],
        "ranking": save(passthrough_module("retrieval"), tmp_path / "p", {}),
    }
    choice = {"all": "two_stage", "new": "retrieval", "unseen": "als"}
    pairs = {"all": trained.staged, "new": alone, "unseen": baselines["als"]}
    dirs = save_per_variant(pairs, choice, tmp_path / "pv", {})
    load = {name: tf.saved_model.load(str(path)).signatures["serving_default"] for name, path in dirs.items()}
    item_ids = [str(i) for i in world.catalog.item_ids]
    variants = ["unseen", "all", "new", "all"]
    batch = _random_inputs(load["retrieval"].structured_input_signature[1], len(variants), item_ids, 1)
    batch[LIST_VARIANT] = np.array([variant_code(v) for v in variants], np.int64)
    got = _call(load["retrieval"], batch)
    specs = load["ranking"].structured_input_signature[1]
    ranking_inputs = _random_inputs(specs, len(variants), item_ids, 2, width=got["item_ids"].shape[1])
    ranking_inputs |= {n: v for n, v in batch.items() if n in specs}  # one user's inputs, both stages
    ranking_inputs |= {"item_id": got["item_ids"], "retrieval_score": got["scores"]}
    ranked = _call(load["ranking"], ranking_inputs)
    assert [r.decode() for r in ranked["recommender"]] == [choice[v] for v in variants]
    for row, variant in enumerate(variants):
        one = {n: v[row : row + 1] for n, v in batch.items()}
        part = tf.saved_model.load(str(pairs[variant]["retrieval"])).signatures["serving_default"]
        want = _call(part, one)
        n = want["item_ids"].shape[1]
        _assert_same_list(got["item_ids"][row, :n], got["scores"][row, :n], want["item_ids"][0], want["scores"][0])
        if variant == "all":  # the trained ranker, as it scores the row alone
            ranker = tf.saved_model.load(str(trained.staged["ranking"])).signatures["serving_default"]
            solo = _call(ranker, {n: v[row : row + 1] for n, v in ranking_inputs.items()})
            scale = float(np.abs(solo["scores"][0]).max())
            np.testing.assert_allclose(ranked["scores"][row], solo["scores"][0], rtol=1e-5, atol=1e-5 * scale)
            assert not np.allclose(ranked["scores"][row], got["scores"][row])
        else:
            np.testing.assert_allclose(ranked["scores"][row], got["scores"][row])
