"""Retrieval batches gathered by row number are the batches a shuffle of whole rows gives."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.train import retrieval_dataset


def test_gathered_batches_equal_shuffled_rows() -> None:
    rows = 1_000
    rng = np.random.default_rng(0)
    inputs = {
        "user_id": np.array([f"u{n % 37}" for n in range(rows)], dtype=object),
        "history": np.array([[f"i{(n + j) % 91}" for j in range(5)] for n in range(rows)], dtype=object),
        "price": rng.random(rows).astype(np.float32),
    }
    plain = tf.data.Dataset.from_tensor_slices(inputs).shuffle(rows, seed=7, reshuffle_each_iteration=True).batch(64)
    gathered = retrieval_dataset(inputs, rows, 64, seed=7)
    for epoch in range(2):  # reshuffled each epoch, identically
        pairs = list(zip(plain, gathered, strict=True))
        assert len(pairs) == -(-rows // 64), epoch
        for want, got in pairs:
            for name in inputs:
                np.testing.assert_array_equal(got[name].numpy(), want[name].numpy(), err_msg=f"{name} epoch {epoch}")
