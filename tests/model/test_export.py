"""The exported SavedModels load without TFRS and answer exactly as the in-memory models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.training

LOAD = """
import json, sys
import numpy as np
import tensorflow as tf
inputs = json.loads(sys.stdin.read())
sig = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
specs = sig.structured_input_signature[1]
out = sig(**{k: tf.constant(np.array(v), dtype=specs[k].dtype) for k, v in inputs.items()})
print(json.dumps({"ids": out["item_ids"].numpy().astype(str).tolist(), "tfrs": "tensorflow_recommenders" in sys.modules,
                  "legacy": __import__("os").environ.get("TF_USE_LEGACY_KERAS")}))
"""


def test_retrieval_savedmodel_matches_the_in_memory_model_without_tfrs(world, trained) -> None:
    from models.data import query_inputs
    from models.train import top_candidates

    users = list(world.examples["user_id"].unique()[:4])
    # The last user's history items (buy-it-again candidates) come first in both answers.
    history = [[], [], [], list(world.catalog.item_ids[-3:])]
    frame = pd.DataFrame(
        {
            "user_id": users,
            "user_recent__last_10_items": [list(world.catalog.item_ids[i : i + 3]) for i in range(4)],
            "user_history__items": history,
            "user_history__counts": [[1.0] * len(h) for h in history],
        }
    )
    query = query_inputs(frame, pd.Timestamp(world.cutoff))
    rows, _ = top_candidates(trained.models.retrieval, query, world.cutoff, k=50)
    expected = world.catalog.item_ids[rows].tolist()
    assert trained.models.retrieval.history_candidates and set(expected[3][:3]) == set(history[3])

    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    payload = json.dumps({k: v.tolist() for k, v in query.items()})
    proc = subprocess.run(
        [sys.executable, "-c", LOAD, str(trained.staged["retrieval"])],
        input=payload,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["tfrs"] is False and answer["legacy"] is None
    assert [ids[:50] for ids in answer["ids"]] == expected
    assert len(answer["ids"][0]) == min(1000, len(world.catalog))
    assert np.all([len(set(ids)) == len(ids) for ids in answer["ids"]])
