"""A TCP proxy that adds latency, and optionally limits bandwidth, like a home link.

netem is not available on these machines; this stands in for a long network
path (a Colab tunnel adds 50-200 ms of round trip). Each chunk is forwarded
``rtt / 2`` after it left the sender; order is kept per direction. With
``up_bandwidth`` (bytes/s) the client-to-server direction is one shared link
paced by a token bucket: a chunk is read from the client only when the link
has sent the one before it, so the client's socket feels the limit (TCP
backpressure) and every connection shares it. ``bytes_up`` counts what the
client sent.

Usage as a library::

    with DelayProxy(upstream_port, rtt=0.1) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
    with DelayProxy(upstream_port, rtt=0.05, up_bandwidth=2.5e6) as home_uplink: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType


class DelayProxy:
    """Listens on a free loopback port and forwards to ``127.0.0.1:upstream``."""

    def __init__(self, upstream: int, *, rtt: float, up_bandwidth: float | None = None) -> None:
        self.upstream = upstream
        self.delay = rtt / 2
        self.up_bandwidth = up_bandwidth
        self.bytes_up = 0  # bytes the client sent through the proxy
        self._link_free = 0.0  # monotonic time the uplink has sent everything given to it
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        """Stop listening and end every connection's tasks, so none outlives the loop."""
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pump(reader, up_writer, up=True),
            self._pump(up_reader, writer, up=False),
            return_exceptions=True,
        )

    async def _sent(self, size: int) -> float:
        """When ``size`` more bytes have left the (limited) uplink; waits for it."""
        if self.up_bandwidth is None:
            return time.monotonic()
        done = max(time.monotonic(), self._link_free) + size / self.up_bandwidth
        self._link_free = done
        await asyncio.sleep(max(0.0, done - time.monotonic()))
        return done

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        sender = asyncio.create_task(deliver())
        try:
            while data := await reader.read(1 << 16):
                if up:
                    self.bytes_up += len(data)
                    sent = await self._sent(len(data))
                else:
                    sent = time.monotonic()
                queue.put_nowait((sent + self.delay, data))
        except OSError:
            pass
        queue.put_nowait((time.monotonic() + self.delay, b""))
        await sender
