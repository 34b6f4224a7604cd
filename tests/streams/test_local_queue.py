"""The local queue shared by processes: the gateway appends in one, a worker reads in another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from streams.local import LocalEventStream
from tests.conftest import REPO

WRITER = textwrap.dedent(
    """
    import sys, time
    from streams.local import LocalEventStream

    folder, writer, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
    stream = LocalEventStream(folder, "events")
    for b in range(batches):
        stream.append([(f"user-{i}", f"{writer}-{b:03d}-{i}".encode()) for i in range(5)])
        time.sleep(0.005)
    print("done", flush=True)
    if len(sys.argv) > 4:  # then hang until killed
        time.sleep(60)
    """
)


def writer(folder: Path, name: str, batches: int, *, hang: bool = False) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", WRITER, str(folder), name, str(batches), *(["hang"] if hang else [])]
    return subprocess.Popen(
        args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True
    )


def test_records_appended_by_other_processes_arrive_once_each(tmp_path: Path) -> None:
    folder = tmp_path / "streams"
    writers = [writer(folder, f"w{n}", 40) for n in range(2)]
    stream = LocalEventStream(folder, "events", reclaim_after_s=30)
    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(seen) < 400 and time.monotonic() < deadline:
        batch = stream.read("workers", "c1", 50, 0.5)
        assert all(r.deliveries == 1 for r in batch)
        stream.ack("workers", batch)
        seen += [r.value for r in batch]
    for w in writers:
        assert w.wait(30) == 0
    seen += [r.value for r in stream.read("workers", "c1", 50, 0.2)]
    assert len(seen) == len(set(seen)) == 400
    for name in ("w0", "w1"):  # one writer's records in its order
        mine = [v for v in seen if v.startswith(name.encode()) and v.endswith(b"-0")]
        assert mine == sorted(mine)
    assert stream.lag("workers") == 0


def test_an_append_survives_the_appending_process_being_killed(tmp_path: Path) -> None:
    folder = tmp_path / "streams"
    proc = writer(folder, "w", 3, hang=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "done"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stream = LocalEventStream(folder, "events")
    assert len(stream.read("workers", "c1", 100, 1.0)) == 15


def test_two_consumers_in_two_processes_never_lease_the_same_record(tmp_path: Path) -> None:
    folder = tmp_path / "streams"
    LocalEventStream(folder, "events").append([(f"user-{i % 7}", f"e{i}".encode()) for i in range(300)])
    reader = textwrap.dedent(
        """
        import sys
        from streams.local import LocalEventStream

        stream = LocalEventStream(sys.argv[1], "events", reclaim_after_s=60)
        while batch := stream.read("workers", sys.argv[2], 7, 0.3):
            stream.ack("workers", batch)
            print("\\n".join(r.value.decode() for r in batch), flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", reader, str(folder), f"c{n}"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        for n in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    got = outputs[0] + outputs[1]
    assert sorted(got) == sorted(f"e{i}" for i in range(300))
    assert LocalEventStream(folder, "events").lag("workers") == 0
