"""A TCP proxy that adds latency, for tests of slow (not dead) dependencies.

`DelayProxy(host, port)` listens on a free port of 127.0.0.1 and forwards every connection to
`host:port`. Each chunk read from either side is held until `delay` seconds after it arrived,
then passed on in order: latency, not bandwidth, so a backlog does not add up, and a delay lowered
at runtime (`proxy.delay = 0`) releases what is held at once. It runs its own event loop in a
thread, so the code under test may be blocking or asyncio.

    with DelayProxy("127.0.0.1", 6379) as proxy:
        client = redis.Redis(port=proxy.port)
        proxy.delay = 2.0  # every round trip now takes at least 4 s
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

CHUNK = 64 * 1024
#: How often a held chunk looks at `delay` again (a lowered delay takes effect within this).
POLL_S = 0.02


class DelayProxy:
    """Forwards TCP connections to `host:port`, holding each chunk `delay` seconds.

    Args:
        host / port: the real service.
        delay: seconds each chunk is held, both directions; change it at any time.
    """

    def __init__(self, host: str, port: int, *, delay: float = 0.0) -> None:
        self.target = (host, port)
        self.delay = delay
        self.port = 0
        self.connections = 0  # accepted so far
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        """`127.0.0.1:<port>`, to put where the service's address goes."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> DelayProxy:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"delay-proxy->{self.target[1]}", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the delay proxy did not start within 10 s")
        return self

    def stop(self) -> None:
        """Close the listener and every forwarded connection, then the loop."""
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- inside the proxy's loop -----------------------------------------------------------------

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            self._writers.discard(client_writer)
            return
        self._writers.add(upstream_writer)
        try:
            # When either side closes, the connection is over: close both.
            pumps = [
                asyncio.ensure_future(self._pump(client_reader, upstream_writer)),
                asyncio.ensure_future(self._pump(upstream_reader, client_writer)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()
                self._writers.discard(writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read chunks as they come; pass each on once it has been held `delay` seconds."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while chunk := await reader.read(CHUNK):
                    held.put_nowait((loop.time(), chunk))
            except (ConnectionError, OSError):
                pass
            held.put_nowait((loop.time(), b""))  # end of stream, after what is held

        reading = asyncio.ensure_future(read())
        try:
            while True:
                arrived, chunk = await held.get()
                while (left := arrived + self.delay - loop.time()) > 0:
                    await asyncio.sleep(min(left, POLL_S))
                if not chunk:
                    return
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
