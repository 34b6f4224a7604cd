"""What the gateway keeps without any service up: impression batches that land once across retries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

# -- impressions -----------------------------------------------------------------------------------


class _FailingLake:
    """A lake whose first write fails: after its commit (`committed=True`, as when the answer is
    lost) or before it."""

    def __init__(self, lake, *, committed: bool) -> None:
        self.lake = lake
        self.committed = committed
        self.calls = 0

    def write(self, uri, data, **kwargs):
        self.calls += 1
        if self.calls == 1 and not self.committed:
            raise OSError("connection reset before the commit")
        version = self.lake.write(uri, data, **kwargs)
        if self.calls == 1:
            raise OSError("connection reset after the commit")
        return version


def _log(logger, request_id: str, n: int) -> None:
    logger.log(
        request_id=request_id,
        user_id="u1",
        items=[(f"i{k}", float(k)) for k in range(n)],
        path="model",
        experiment_id="default",
        arm="control",
        model_versions={"retrieval": "1", "ranking": "1"},
    )


@pytest.mark.parametrize("committed", [True, False], ids=["fails-after-commit", "fails-before-commit"])
def test_a_retried_impression_batch_lands_once(tmp_path: Path, committed: bool) -> None:
    from jobs.lake import Lake
    from serving.impressions import ImpressionLogger

    lake = Lake(str(tmp_path / "lake"))
    uri = lake.uri("bronze", "impressions")
    logger = ImpressionLogger(_FailingLake(lake, committed=committed), uri)

    async def run() -> list[int]:
        _log(logger, "first", 3)
        failed = await logger.flush()
        _log(logger, "second", 2)  # arrives while the first batch waits for its retry
        return [failed, logger.pending, await logger.flush(), logger.pending]

    assert asyncio.run(run()) == [0, 5, 5, 0]
    rows = lake.read(uri).to_pylist()
    assert sorted((r["request_id"], r["item_id"]) for r in rows) == sorted(
        [("first", f"i{k}") for k in range(3)] + [("second", f"i{k}") for k in range(2)]
    )


def test_impressions_over_the_cap_drop_the_oldest(tmp_path: Path) -> None:
    from jobs.lake import Lake
    from serving.impressions import ImpressionLogger

    class Down:
        def write(self, *args, **kwargs):
            raise OSError("unreachable")

    lake = Lake(str(tmp_path / "lake"))
    logger = ImpressionLogger(Down(), lake.uri("bronze", "impressions"), max_rows=4)

    async def run() -> None:
        _log(logger, "a", 3)
        await logger.flush()
        _log(logger, "b", 3)
        await logger.flush()
        logger.lake = lake
        await logger.flush()

    asyncio.run(run())
    rows = lake.read(lake.uri("bronze", "impressions")).to_pylist()
    assert sorted((r["request_id"], r["position"]) for r in rows) == [("a", 3), ("b", 1), ("b", 2), ("b", 3)]
