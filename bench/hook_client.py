"""A lean HTTP/1.1 client for the load a benchmark offers: keep-alive connections opened as needed,
each request written as bytes and its answer read as a status line, headers and a body.

The load generator shares this machine's two cores with what it measures. httpx spent about 1 ms
of CPU per hook (its pool, its models, anyio's streams, h11): at 100 hooks/s the chain benchmark's
client used 17 % of a core, most of it httpx's. Only what a hook needs is here: a POST with its
headers and a body, answered with a ``Content-Length`` or chunked body.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 60


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer


class HookClient:
    """POSTs to one server over at most ``connections`` keep-alive connections."""

    def __init__(self, base_url: str, connections: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"an http:// URL is needed, not {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._authority = f"{self._host}:{self._port}".encode()
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """The answer's status code; 0 when the connection failed or the answer did not come in
        ``TIMEOUT_SECONDS`` (the connection is then closed)."""
        head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: " + self._authority]
        head += [f"{name}: {value}".encode() for name, value in headers.items()]
        head += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
        request = b"\r\n".join(head) + b"\r\n\r\n" + body
        async with self._slots:
            try:
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    while self._idle:  # a kept connection the server closed meanwhile: the next one
                        connection = self._idle.pop()
                        try:
                            return await self._exchange(connection, request)
                        except (EOFError, ConnectionResetError):
                            pass  # _exchange dropped it
                    connection = _Connection(*await asyncio.open_connection(self._host, self._port))
                    self._all.add(connection)
                    return await self._exchange(connection, request)
            except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError):
                return 0

    async def _exchange(self, connection: _Connection, request: bytes) -> int:
        try:
            connection.writer.write(request)
            status, keep = await _answer(connection.reader)
        except BaseException:
            self._drop(connection)
            raise
        if keep:
            self._idle.append(connection)
        else:
            self._drop(connection)
        return status

    def _drop(self, connection: _Connection) -> None:
        self._all.discard(connection)
        connection.writer.close()

    async def aclose(self) -> None:
        for connection in list(self._all):
            self._drop(connection)
        self._idle.clear()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one answer: its status code, and whether the connection may carry another request."""
    status_line = await reader.readline()
    if not status_line:  # closed before answering: a kept connection the server had let go
        raise EOFError("the server closed the connection")
    version, status = status_line.split(b" ", 2)[:2]
    length, chunked, keep = 0, False, version == b"HTTP/1.1"
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value == b"chunked"
        elif name == b"connection":
            keep = value == b"keep-alive" or (keep and value != b"close")
    if chunked:
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        while await reader.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
    else:
        await reader.readexactly(length)
    return int(status), keep
