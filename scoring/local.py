"""A model pair's SavedModels called in process: the `ModelCaller` of offline evaluation,
`towerflow recommend` and the daily precompute.

The model server loads the same folders with `tf.saved_model.load` and calls the same
`serving_default` signatures, one user per call, as here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from serving.tfs_client import InputSpec

SIGNATURE = "serving_default"


def input_specs(signature: Any) -> dict[str, InputSpec]:
    """A loaded signature's inputs as `InputSpec`s (TF dtype numbers; -1 for unknown dims)."""
    specs = signature.structured_input_signature[1]
    return {
        name: InputSpec(name, spec.dtype.as_datatype_enum, tuple(-1 if d is None else int(d) for d in spec.shape))
        for name, spec in specs.items()
    }


class SavedModelPair:
    """The `retrieval` and `ranking` SavedModels of one version, loaded in process.

    Args:
        dirs: {"retrieval": dir, "ranking": dir} (a published version or a run's staged models).
        version: the version number, for messages (None for staged models).
    """

    def __init__(self, dirs: Mapping[str, Path], version: int | None = None) -> None:
        from models.tf_env import tensorflow

        self._tf = tensorflow()
        self.dirs = dict(dirs)
        self.version = version
        self._signatures = {m: self._tf.saved_model.load(str(d)).signatures[SIGNATURE] for m, d in self.dirs.items()}
        self._specs = {m: input_specs(sig) for m, sig in self._signatures.items()}

    def specs(self, model: str) -> dict[str, InputSpec]:
        return self._specs[model]

    def predict(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        specs = self._signatures[model].structured_input_signature[1]
        tensors = {name: tf.constant(inputs[name], dtype=spec.dtype) for name, spec in specs.items()}
        return {name: value.numpy() for name, value in self._signatures[model](**tensors).items()}
