"""The evaluation keeps each user's figures when asked (`bench quality` pools holdouts with
them): they pair up across recommenders and average to the reported means."""

from __future__ import annotations

import numpy as np
import pytest

from models.baselines import BASELINES
from scoring.context import VARIANTS

pytestmark = pytest.mark.training


def test_kept_values_are_the_users_figures_behind_each_mean(world) -> None:
    from models.evaluate import evaluate

    data = world.eval_data()
    report = evaluate(data, None, None, None, progress=lambda _: None, keep_values=True)
    for variant in VARIANTS:
        with_truth = int((np.asarray(data.truth_for(variant).sum(axis=1)).ravel() > 0).sum())
        for name in BASELINES:
            for metric in ("recall@10", "recall@100", "ndcg@10"):
                values = report["values"][variant][name][metric]
                assert values.shape == (with_truth,)
                assert values.mean() == pytest.approx(report["metrics"][variant][name][metric], rel=1e-9)
    assert "values" not in evaluate(data, None, None, None, progress=lambda _: None)
