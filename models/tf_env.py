"""TensorFlow's import-time environment, in one place.

TFRS 0.7.7 refuses Keras 3, so `TF_USE_LEGACY_KERAS=1` must be set before TensorFlow is first
imported (PLATFORM-NOTES.md); the log level hides CUDA probing and a harmless TF 2.21 error line.
Call `tensorflow()` instead of `import tensorflow` in code that may be the first to import it.
"""

from __future__ import annotations

import os


def tensorflow():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def seed_everything(seed: int) -> None:
    """Same seed, same model: Python, NumPy and TF seeds plus deterministic TF ops."""
    tf = tensorflow()
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
