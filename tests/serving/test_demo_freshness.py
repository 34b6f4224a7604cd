"""The end of `make demo`: clicks on the last recommendations go in as events, and the answer a
second later is printed beside the first (towerflow.demo._show_freshness), through the real
gateway, Redis stream and stream worker."""

from __future__ import annotations

import io
import threading

import pytest
from rich.console import Console

pytestmark = pytest.mark.integration


def test_the_demo_shows_the_answer_before_and_after_the_clicks(make_client, gw, own_project, monkeypatch) -> None:
    from serving.stream_worker.worker import open_worker
    from towerflow import demo

    client = make_client(feast_project=own_project)
    worker = open_worker(client.app.state.settings)
    worker.poll_s = 0.05
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    headers = gw.auth("recommend:any events:write")
    url = "/v1/recommendations?user_id=u2&count=10"
    before = client.get(url, headers=headers).json()
    monkeypatch.setattr(demo, "httpx", client)  # the demo's HTTP calls go to this gateway
    monkeypatch.setattr(demo.time, "sleep", lambda _: stop.wait(1.0))
    out = io.StringIO()
    try:
        demo._show_freshness(Console(file=out, width=200), "", headers["Authorization"].split()[-1], url, before)
    finally:
        stop.set()
        thread.join(timeout=10)
        worker.close()
    printed = out.getvalue()
    clicked = [item["item_id"] for item in before["items"][-3:]]
    assert "-> 202" in printed and all(item in printed for item in clicked)
    assert "before (model)" in printed and "after (model)" in printed
    recent = client.app.state.resources.reader.user_features("u2")["user_recent__last_10_items"]
    assert set(recent[:3]) == set(clicked)
