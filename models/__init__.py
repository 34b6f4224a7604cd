"""Model code: TFRS towers and the lifecycle verbs (train, evaluate, export, publish, predict)."""

import os

# TFRS 0.7.7 refuses Keras 3: the switch must be set before any module here imports TensorFlow
# (models.tf_env says why); setting it here covers every import order.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
