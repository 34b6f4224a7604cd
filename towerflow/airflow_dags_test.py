"""`airflow dags test`, with the two things the Airflow UI needs from a run that a scheduler would
have given it. Run as `python -m towerflow.airflow_dags_test <dag_id> <date> [airflow dags test
options]` (what `towerflow.airflow_runner.run_dag` does).

`airflow dags test` runs every task in its own process, so (Airflow 3.3):

- Task output goes to the process's stdout only: no file lands where the UI reads task logs, and
  every Logs tab says "Log file not found". Here stdout and stderr (Python, Spark's JVM, TensorFlow)
  pass through a pipe; each line is copied to stdout as before, and while a task runs also to that
  task's log file, `<base_log_folder>/dag_id=.../run_id=.../task_id=.../attempt=N.log` (the path
  `FileTaskHandler` renders from `log_filename_template`), as the JSON lines a worker writes.
- The run's start date is its logical date (apache/airflow#66127), so a run for a past date shows
  a duration of months. Here the run starts at the wall-clock time it was created.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

#: A structlog console line: `2026-12-06T16:26:05.253904Z [info     ] message ...`.
CONSOLE_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) \[(\w+)\s*\] (.*)$")
#: Starts a control line sent through the pipe (never part of a log line).
MARKER = b"\x00towerflow-task-log:"


def log_record(line: str) -> dict[str, str]:
    """One line of output as a record of Airflow's task log format (JSON lines with `timestamp`,
    `level` and `event`); lines not written by Airflow's logging get the time they were read."""
    if match := CONSOLE_LINE.match(line):
        timestamp, level, event = match.groups()
        return {"timestamp": timestamp, "level": level, "event": event}
    return {"timestamp": datetime.now(UTC).isoformat(), "event": line}


class TaskLogTee:
    """Routes this process's stdout and stderr (file descriptors 1 and 2, so child processes such
    as Spark's JVM too) through a pipe: every line goes on to the original stdout, and while a task
    log is open (`open_log`) also into that file.

    Switching files travels through the pipe as a marker, so each line lands in the file that was
    open when it was written.
    """

    def __init__(self) -> None:
        self._out = os.dup(1)
        self._task: IO[str] | None = None
        self._synced = threading.Event()
        read, write = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        # A daemon: Spark's JVM may hold the pipe open after this process is done with it.
        threading.Thread(target=self._pump, args=(read,), name="task-log-tee", daemon=True).start()

    def open_log(self, path: Path | None) -> None:
        """Copy what is written from now on into `path` (appended; None: into no task log)."""
        self._send({"open": str(path) if path else None})

    def close(self) -> None:
        """Wait until every line written so far is copied, then give stdout and stderr back."""
        self._send({"open": None})
        os.dup2(self._out, 1)
        os.dup2(self._out, 2)

    def _send(self, command: dict[str, Any]) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._synced.clear()
        os.write(1, MARKER + json.dumps(command).encode() + b"\n")
        self._synced.wait(timeout=30)

    def _pump(self, read: int) -> None:
        pending = b""
        while chunk := os.read(read, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                text, marker, command = line.partition(MARKER)
                try:
                    if text or not marker:
                        self._copy(text + b"\n")
                    if marker:
                        self._switch(json.loads(command))
                except Exception as err:  # the pipe must keep draining, or the run blocks
                    self._task = None
                    self._synced.set()
                    os.write(self._out, f"towerflow: task log copy failed: {err!r}\n".encode())

    def _copy(self, line: bytes) -> None:
        os.write(self._out, line)
        if self._task is not None:
            text = line.decode(errors="replace").rstrip("\n")
            if text.strip():
                self._task.write(json.dumps(log_record(text)) + "\n")
                self._task.flush()

    def _switch(self, command: dict[str, Any]) -> None:
        if self._task is not None:
            self._task.close()
            self._task = None
        if command.get("open"):
            path = Path(command["open"])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._task = path.open("a", encoding="utf-8")
        self._synced.set()


def task_log_path(ti: Any) -> Path:
    """Where the API server reads this try of `ti`'s log: `log_filename_template` rendered under
    `[logging] base_log_folder`, as the worker's `FileTaskHandler` would write it."""
    from airflow.configuration import conf
    from airflow.utils.log.file_task_handler import FileTaskHandler

    base = conf.get("logging", "base_log_folder")
    return Path(base) / FileTaskHandler(base_log_folder=base)._render_filename(ti, ti.try_number)


def logging_each_task(run_task: Callable[..., Any], tee: TaskLogTee) -> Callable[..., Any]:
    """`dag.test`'s `_run_task` with the task's output copied into its log file."""

    @functools.wraps(run_task)
    def run(*, ti: Any, task: Any, **kwargs: Any) -> Any:
        tee.open_log(task_log_path(ti))
        try:
            return run_task(ti=ti, task=task, **kwargs)
        finally:
            tee.open_log(None)

    return run


def starting_now(get_or_create_dagrun: Callable[..., Any]) -> Callable[..., Any]:
    """`dag.test`'s `get_or_create_dagrun` with the run's start date the wall-clock time."""

    @functools.wraps(get_or_create_dagrun)
    def create(**kwargs: Any) -> Any:
        return get_or_create_dagrun(**(kwargs | {"start_date": datetime.now(UTC)}))

    return create


def main(argv: list[str]) -> None:  # pragma: no cover, run as a process by tests/dags
    tee = TaskLogTee()
    try:
        import airflow.models.dagrun as dagrun
        import airflow.sdk.definitions.dag as sdk_dag
        from airflow.__main__ import main as airflow_main

        for module, name in ((sdk_dag, "_run_task"), (dagrun, "get_or_create_dagrun")):
            if not hasattr(module, name):
                raise RuntimeError(
                    f"{module.__name__}.{name} is gone (an Airflow upgrade?): adapt towerflow/airflow_dags_test.py"
                )
        sdk_dag._run_task = logging_each_task(sdk_dag._run_task, tee)  # type: ignore[attr-defined]
        dagrun.get_or_create_dagrun = starting_now(dagrun.get_or_create_dagrun)  # type: ignore[assignment]
        sys.argv = ["airflow", "dags", "test", *argv]
        airflow_main()
    finally:
        tee.close()


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
