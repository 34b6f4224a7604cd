"""The retrieval export's top-k (models/topk.py) answers exactly as `tf.math.top_k`."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.topk import top_k


def _both(scores: np.ndarray, k: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    spec = tf.TensorSpec([None, scores.shape[1]], tf.float32)
    fast = tf.function(lambda s: top_k(tf, s, k), input_signature=[spec])(tf.constant(scores))
    plain = tf.math.top_k(tf.constant(scores), k=k)
    return (fast[0].numpy(), fast[1].numpy()), (plain.values.numpy(), plain.indices.numpy())


def _skewed() -> np.ndarray:
    scores = np.random.default_rng(4).standard_normal((1, 50_000))
    scores[0, ::12] = 1000 + np.arange(scores[0, ::12].size)  # models/topk.py samples every 12th here
    return scores


@pytest.mark.parametrize(
    "name, scores",
    [
        ("random", np.random.default_rng(0).standard_normal((1, 50_000))),
        # Many equal scores: the lower index must come first, as in tf.math.top_k.
        ("ties", np.random.default_rng(1).integers(0, 40, (1, 50_000))),
        # Only the sampled positions score high: fewer than k pass the threshold -> the fallback.
        ("skewed", _skewed()),
        ("batch", np.random.default_rng(2).standard_normal((3, 50_000))),
    ],
)
def test_top_k_equals_tf_top_k(name: str, scores: np.ndarray) -> None:
    fast, plain = _both(scores.astype(np.float32), 1000)
    np.testing.assert_array_equal(fast[1], plain[1], err_msg=name)
    np.testing.assert_array_equal(fast[0], plain[0], err_msg=name)


def test_small_catalogs_use_plain_top_k() -> None:
    scores = np.random.default_rng(3).standard_normal((1, 500)).astype(np.float32)
    fast, plain = _both(scores, 100)
    np.testing.assert_array_equal(fast[1], plain[1])
