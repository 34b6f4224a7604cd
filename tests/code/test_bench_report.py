"""bench.report: the performance table of docs/performance.md from a results file; `towerflow bench`
and `bench-report` run from a source checkout only."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.report import flatten, fmt, load, render
from towerflow import cli

MACHINE = {"machine": "x86_64", "cpus": 2, "memory_gb": 23.5, "python": "3.11.7"}


def _write(path: Path, *entries: dict) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def test_last_line_of_a_benchmark_wins_and_order_is_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "r.json",
        {"bench": "synth", "events": 1, **MACHINE},
        {"bench": "etl", "seconds": 2.5, **MACHINE},
        {"bench": "synth", "events": 7, **MACHINE},
    )
    results = load(path)
    assert [r["bench"] for r in results] == ["etl", "synth"]
    assert results[1]["events"] == 7


def test_render_puts_the_machine_above_one_row_per_figure(tmp_path: Path) -> None:
    text = render([{"bench": "serve", "p50_ms": 1.25, "paths": {"model": 1200, "cached": 0}, "ok": True, **MACHINE}])
    lines = text.splitlines()
    assert lines[0] == "Measured with `make bench` on: x86_64, 2 CPUs, 23.5 GB RAM, Python 3.11.7."
    assert "| serve | p50_ms | 1.25 |" in lines
    assert "| serve | paths.model | 1,200 |" in lines
    assert "| serve | ok | yes |" in lines
    assert "memory_gb" not in text and "| serve | python |" not in text


def test_render_names_each_machine_when_they_differ() -> None:
    other = {**MACHINE, "cpus": 8}
    text = render([{"bench": "a", "x": 1, **MACHINE}, {"bench": "b", "x": 2, **other}])
    assert "| a | x | 1 | x86_64, 2 CPUs, 23.5 GB RAM, Python 3.11.7 |" in text
    assert "| b | x | 2 | x86_64, 8 CPUs, 23.5 GB RAM, Python 3.11.7 |" in text


def test_formats() -> None:
    assert fmt(float("nan")) == "n/a"
    assert fmt(208614.2) == "208,614"
    assert fmt(0.812) == "0.812"
    assert fmt("a|b") == "a\\|b"
    assert flatten({"a": {"b": {"c": 1}}}) == {"a.b.c": 1}


def test_a_broken_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"bench": "synth"}\nnot json\n')
    with pytest.raises(ValueError, match="r.json:2"):
        load(path)


def test_bench_report_renders_from_the_source_checkout(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.json", {"bench": "synth", "events": 7, **MACHINE})
    result = CliRunner().invoke(cli.app, ["bench-report", str(path)])
    assert result.exit_code == 0, result.output
    assert "| synth | events | 7 |" in result.output


@pytest.mark.parametrize("command", [["bench", "synth"], ["bench-report", "r.json"]])
def test_bench_commands_name_the_checkout_when_bench_is_not_installed(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_source_checkout", lambda: None)  # as from a wheel: no bench/ beside the package
    result = CliRunner().invoke(cli.app, command)
    assert result.exit_code == 2
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "source checkout" in said and "pip install -e ." in said
