"""LazyAdam (models.optimizers): Keras' Adam on dense variables; on embedding rows, an update of
the rows a batch looked up only, summed over repeats, as Adam would make it for them."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.optimizers import lazy_adam


def _steps(optimizer, rows_per_step: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    table = tf.Variable(np.arange(1, 13, dtype=np.float32).reshape(4, 3))
    dense = tf.Variable(np.ones(3, dtype=np.float32))
    for rows in rows_per_step:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.gather(table, rows))) + tf.reduce_sum(tf.square(dense * 2.0))
        grads = tape.gradient(loss, [table, dense])
        assert isinstance(grads[0], tf.IndexedSlices)
        optimizer.apply_gradients(zip(grads, [table, dense], strict=True))
    return table.numpy(), dense.numpy()


def test_lazy_adam_moves_only_the_rows_a_batch_looked_up() -> None:
    steps = [[0, 1, 1], [2]]
    lazy_table, lazy_dense = _steps(lazy_adam(0.1), steps)
    adam_table, adam_dense = _steps(tf.keras.optimizers.Adam(0.1), steps)
    np.testing.assert_allclose(lazy_dense, adam_dense, rtol=1e-6)  # dense variables: Adam
    start = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(lazy_table[3], start[3])  # never looked up
    # First step: Adam's update of rows 0 and 1 (row 1 twice: one update of the summed gradient).
    assert np.all(lazy_table[:2] < start[:2]) and np.all(lazy_table[2] < start[2])
    first_lazy, _ = _steps(lazy_adam(0.1), steps[:1])
    first_adam, _ = _steps(tf.keras.optimizers.Adam(0.1), steps[:1])
    np.testing.assert_allclose(first_lazy, first_adam, rtol=1e-6)
    # Second step looks up row 2 only: Adam moves rows 0 and 1 again on momentum, LazyAdam does not.
    np.testing.assert_array_equal(lazy_table[:2], first_lazy[:2])
    assert not np.allclose(adam_table[:2], first_adam[:2])
