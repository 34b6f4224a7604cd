"""The optimizer of the towers: Adam whose embedding updates touch only the rows in the batch.

Keras' Adam, given an embedding table's sparse gradient, still decays every row's moments and
moves every row of the table on each step, so a step costs as much as the tables are large
(users and items), not as much as the batch. `LazyAdam` updates the moments and values of the
rows the batch looked up and leaves the others as they are (as TensorFlow Addons' LazyAdam
did); dense variables get Keras' Adam unchanged.
"""

from __future__ import annotations

from typing import Any

from models.tf_env import tensorflow


def lazy_adam(learning_rate: float) -> Any:
    """A `LazyAdam` (a `tf.keras.optimizers.Adam`) with `learning_rate`."""
    tf = tensorflow()

    class LazyAdam(tf.keras.optimizers.Adam):  # type: ignore[name-defined]  # tf is imported lazily (untyped)
        def update_step(self, gradient: Any, variable: Any) -> Any:
            if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
                return super().update_step(gradient, variable)
            dtype = variable.dtype
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
            alpha = tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            epsilon = self.epsilon * tf.sqrt(1 - beta_2_power) if self.adaptive_epsilon else self.epsilon
            key = self._var_key(variable)
            m = self._momentums[self._index_dict[key]]
            v = self._velocities[self._index_dict[key]]
            # A row looked up twice in the batch gets one update from its summed gradient.
            rows, at = tf.unique(gradient.indices)
            grad = tf.math.unsorted_segment_sum(gradient.values, at, tf.shape(rows)[0])
            m_rows = tf.gather(m, rows) * beta_1 + grad * (1 - beta_1)
            v_rows = tf.gather(v, rows) * beta_2 + tf.square(grad) * (1 - beta_2)
            m.scatter_update(tf.IndexedSlices(m_rows, rows))
            v.scatter_update(tf.IndexedSlices(v_rows, rows))
            return variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))

    return LazyAdam(learning_rate)
