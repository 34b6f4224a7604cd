"""Process logging: JSON lines that carry the request id (towerflow/logs.py)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from towerflow.logs import REQUEST_ID, configure


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_the_request_id_and_the_exception(restore_root_logging) -> None:
    out = io.StringIO()
    configure("json", stream=out)
    log = logging.getLogger("towerflow.test")
    log.info("outside a request")
    token = REQUEST_ID.set("req-12345678")
    try:
        log.warning("ranking %s timed out", "v3")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    finally:
        REQUEST_ID.reset(token)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["outside a request", "ranking v3 timed out", "failed"]
    assert "request_id" not in lines[0]
    assert lines[1]["request_id"] == lines[2]["request_id"] == "req-12345678"
    assert lines[1]["level"] == "WARNING" and lines[1]["logger"] == "towerflow.test"
    assert "RuntimeError: boom" in lines[2]["exception"]


def test_text_is_the_default_shape_and_server_loggers_go_through_the_root(restore_root_logging) -> None:
    out = io.StringIO()
    configure("text", stream=out)
    logging.getLogger("uvicorn.error").addHandler(logging.NullHandler())
    configure("text", stream=out)
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    assert out.getvalue().rstrip().endswith("INFO uvicorn.error: Application startup complete.")
