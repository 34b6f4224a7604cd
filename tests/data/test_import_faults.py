"""Imports that crash half-way or run twice at once still land each row exactly once.

Faults are injected for real: the events commit raises once (the items commit has landed), or two
processes (or threads) import the same file together, meeting at each Delta commit so that both
have checked for the batch before either commits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import jobs.ingest
import towerflow.lake
from jobs.ingest import import_events, import_online_retail
from towerflow.lake import Lake

REPO = Path(__file__).resolve().parents[2]
EVENTS = (
    "user_id,item_id,action,timestamp,quantity,price\n"
    "u1,i1,view,2025-01-01 10:00:00,,\n"
    "u1,i1,purchase,2025-01-01 10:05:00,2,3.5\n"
    "u2,i2,click,2025-01-02T08:00:00Z,,\n"
    "u2,i3,view,2025-01-02T08:01:00Z,,\n"
)
ITEMS = "item_id,description,category,price\ni1,Mug,kitchen,3.5\ni2,Lamp,lighting,20\ni3,Kite,toys,8\n"
OTHER_EVENTS = "user_id,item_id,action,timestamp\nu9,i9,view,2024-12-31 09:00:00\n"
RETAIL = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
    "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom\n"
    "536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,,United Kingdom\n"
    "C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,12/2/2010 9:41,2.55,14527,United Kingdom\n"
)
#: Delta commit entry points the importer may call, per module (whichever a module imported).
COMMIT_FUNCTIONS = ("write_deltalake",)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _table_uri(target: Any) -> str:
    return str(getattr(target, "table_uri", target)).rstrip("/")


def _patch_commits(monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Route every Delta data commit of the importer through `wrap(original)`."""
    for module in (towerflow.lake, jobs.ingest):
        for name in COMMIT_FUNCTIONS:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, wrap(getattr(module, name)))


def _rows(lake: Lake, table: str) -> pa.Table:
    rows = lake.read(lake.uri("bronze", table))
    assert rows is not None, f"bronze/{table} was not written"
    return rows


def _keys(rows: pa.Table, columns: tuple[str, ...]) -> list[tuple]:
    return sorted(zip(*(rows.column(c).to_pylist() for c in columns), strict=True))


def assert_landed_once(lake: Lake, reference: Lake) -> None:
    """Each row of a clean import (`reference`) is in `lake` exactly once, and nothing else."""
    for table, key in (("events", ("event_id",)), ("items", ("import_batch", "source_row", "item_id"))):
        got, want = _keys(_rows(lake, table), key), _keys(_rows(reference, table), key)
        assert got == want, f"bronze/{table}: {len(got)} rows landed, {len(want)} expected once each"


def _importers(folder: Path) -> dict[str, Callable[[Lake], Any]]:
    events, items = _write(folder, "events.csv", EVENTS), _write(folder, "items.csv", ITEMS)
    retail = _write(folder, "retail.csv", RETAIL)
    return {
        "events --items": lambda lake: import_events(lake, events, items_path=items),
        "online-retail": lambda lake: import_online_retail(lake, retail),
    }


class InjectedCrash(RuntimeError):
    """The process 'dies' here."""


@pytest.mark.parametrize("kind", ["events --items", "online-retail"])
def test_a_crash_between_the_items_and_events_commits_then_a_retry_lands_each_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    run = _importers(tmp_path)[kind]
    reference = Lake(str(tmp_path / "reference"))
    run(reference)
    lake = Lake(str(tmp_path / "lake"))
    crashed: list[str] = []

    def crash_once_on_events(original: Callable[..., Any]) -> Callable[..., Any]:
        def commit(target: Any, *args: Any, **kwargs: Any) -> Any:
            if _table_uri(target).endswith("/bronze/events") and not crashed:
                crashed.append(_table_uri(target))
                raise InjectedCrash("killed between the items and the events commit")
            return original(target, *args, **kwargs)

        return commit

    with monkeypatch.context() as patched:
        _patch_commits(patched, crash_once_on_events)
        with pytest.raises(InjectedCrash):
            run(lake)
    assert crashed, "the events commit was never reached"
    assert len(_rows(lake, "items")) == len(_rows(reference, "items"))  # items landed before the crash
    assert lake.read(lake.uri("bronze", "events")) is None or len(_rows(lake, "events")) == 0

    retry = run(lake)

    assert retry.events_landed == len(_rows(reference, "events"))
    assert retry.items_landed == 0  # already there
    assert_landed_once(lake, reference)
    again = run(lake)
    assert again.already_imported and again.events_landed == again.items_landed == 0
    assert_landed_once(lake, reference)


# ------------------------------------------------------------------------------------- concurrency

#: Run in each child process: import the same files into the same lake, meeting the other
#: process at every Delta data commit (or going on alone after a while, if it never comes).
CHILD = r"""
import json, sys, time
from pathlib import Path

import jobs.ingest, towerflow.lake
from towerflow.lake import Lake

meet_dir, lake_root, events, items, me = sys.argv[1:]
calls = [0]


def meeting(original):
    def commit(*args, **kwargs):
        calls[0] += 1
        Path(meet_dir, f"{calls[0]}-{me}").touch()
        deadline = time.monotonic() + 15
        while len(list(Path(meet_dir).glob(f"{calls[0]}-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        return original(*args, **kwargs)
    return commit


for module in (towerflow.lake, jobs.ingest):
    if hasattr(module, "write_deltalake"):
        module.write_deltalake = meeting(module.write_deltalake)
report = jobs.ingest.import_events(Lake(lake_root), Path(events), items_path=Path(items))
print(json.dumps({"events": report.events_landed, "items": report.items_landed}))
"""


def _prepare(tmp_path: Path, existing: bool) -> tuple[Lake, Lake, Path, Path]:
    events, items = _write(tmp_path, "events.csv", EVENTS), _write(tmp_path, "items.csv", ITEMS)
    lake, reference = Lake(str(tmp_path / "lake")), Lake(str(tmp_path / "reference"))
    if existing:  # both tables exist already, from another file
        other = _write(tmp_path, "other.csv", OTHER_EVENTS)
        for target in (lake, reference):
            import_events(target, other)
    import_events(reference, events, items_path=items)
    return lake, reference, events, items


@pytest.mark.parametrize("existing", [False, True], ids=["new-tables", "existing-tables"])
def test_two_processes_importing_the_same_file_land_each_row_once(tmp_path: Path, existing: bool) -> None:
    lake, reference, events, items = _prepare(tmp_path, existing)
    meet = tmp_path / "meet"
    meet.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(meet), lake.root, str(events), str(items), name],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outcomes = [child.communicate(timeout=300) for child in children]
    for child, (_, err) in zip(children, outcomes, strict=True):
        assert child.returncode == 0, f"an import failed:\n{err[-3000:]}"
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outcomes]
    assert len(list(meet.glob("1-*"))) == 2  # both reached the first commit: they did race
    assert_landed_once(lake, reference)
    assert sorted(r["events"] for r in reports) == [0, len(_rows(reference, "events")) - existing]
    assert sum(r["items"] for r in reports) == len(_rows(reference, "items")) - existing


def test_two_threads_importing_the_same_file_land_each_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, reference, events, items = _prepare(tmp_path, existing=False)
    arrivals: dict[int, int] = {}
    arrived = threading.Condition()
    mine = threading.local()

    def meeting(original: Callable[..., Any]) -> Callable[..., Any]:
        def commit(*args: Any, **kwargs: Any) -> Any:
            mine.calls = getattr(mine, "calls", 0) + 1
            with arrived:
                arrivals[mine.calls] = arrivals.get(mine.calls, 0) + 1
                arrived.notify_all()
                arrived.wait_for(lambda: arrivals[mine.calls] >= 2, timeout=15)
            return original(*args, **kwargs)

        return commit

    _patch_commits(monkeypatch, meeting)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            import_events(lake, events, items_path=items)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "an import hangs"
    assert not errors, f"an import failed: {errors[0]!r}"
    assert arrivals.get(1) == 2  # both reached the first commit: they did race
    assert_landed_once(lake, reference)
