"""Exact top-k over a large catalog, cheaper than one `tf.math.top_k` over every score.

TensorFlow's CPU top_k keeps a k-sized heap over all N scores; for k = 1000 of N = 100k that is
most of a retrieval call. Here, for one query row: the k*2/N-quantile of a strided sample of the
scores gives a threshold, the scores at or above it (about 2k of them) are gathered, and top_k
runs on those. When fewer than k scores pass (a skewed sample) or the batch has several rows, it
falls back to the plain top_k. The answer is exactly `tf.math.top_k`'s, ties included (gathered
scores keep their catalog order, and top_k puts the lower index first among equals).
"""

from __future__ import annotations

from typing import Any

#: Below this many scores per candidate wanted, a plain top_k is already cheap.
_MIN_RATIO = 16
#: The threshold aims at this many times k scores passing (k's shortfall is ~4 standard deviations away).
_OVERSHOOT = 2.0
#: Sample this many times k scores to place the threshold.
_SAMPLE = 4


def top_k(tf: Any, scores: Any, k: int) -> tuple[Any, Any]:
    """(values [B, k], indices [B, k] int32) of the k largest scores per row, as `tf.math.top_k`.

    Args:
        tf: the TensorFlow module (callers import it lazily).
        scores: float [B, N] with N known when tracing (the catalog size).
        k: how many per row (at most N).
    """
    n = scores.shape[-1]
    if n is None or n < _MIN_RATIO * k:
        return _plain(tf, scores, k)
    stride = max(1, n // (_SAMPLE * k))
    sample = scores[:, ::stride]
    rank = min(int(_OVERSHOOT * k * sample.shape[-1] / n) + 1, sample.shape[-1])
    threshold = tf.math.top_k(sample, k=rank).values[:, -1:]
    passed = scores >= threshold
    enough = tf.reduce_all(tf.reduce_sum(tf.cast(passed, tf.int32), axis=1) >= k)
    single = tf.equal(tf.shape(scores)[0], 1)

    def from_passed():
        at = tf.cast(tf.where(passed[0])[:, 0], tf.int32)
        top = tf.math.top_k(tf.gather(scores[0], at), k=k)
        return top.values[None, :], tf.gather(at, top.indices)[None, :]

    return tf.cond(tf.logical_and(single, enough), from_passed, lambda: _plain(tf, scores, k))


def _plain(tf: Any, scores: Any, k: int) -> tuple[Any, Any]:
    top = tf.math.top_k(scores, k=k)
    return top.values, top.indices
