"""bench.hook_client against a real HTTP/1.1 server on 127.0.0.1 (asyncio's own streams)."""

from __future__ import annotations

import asyncio
import socket

from bench.hook_client import HookClient

CHUNKED = b'HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'


async def _server(answers: list[bytes], seen: list[bytes], close_after: int = 0) -> asyncio.Server:
    """Answers each request with the next of ``answers``; closes a connection after ``close_after``
    requests on it (0: never)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
            if not head:
                break
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            seen.append(head + await reader.readexactly(length))
            writer.write(answers.pop(0))
            await writer.drain()
            served += 1
            if served == close_after:
                break
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def _url(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_post_carries_its_headers_and_body_and_keeps_its_connection() -> None:
    seen: list[bytes] = []
    answers = [b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}", CHUNKED]
    async with await _server(answers, seen) as server:
        client = HookClient(_url(server), connections=4)
        first = await client.post("/webhooks/gitlab", b'{"x":1}', {"X-Gitlab-Event": "Pipeline Hook"})
        second = await client.post("/webhooks/gitlab", b'{"x":2}', {})
        await client.aclose()
    assert (first, second) == (202, 202)
    assert seen[0].startswith(b"POST /webhooks/gitlab HTTP/1.1\r\n")
    assert b"\r\nX-Gitlab-Event: Pipeline Hook\r\n" in seen[0]
    assert seen[0].endswith(b'Content-Length: 7\r\n\r\n{"x":1}')
    assert seen[1].endswith(b'{"x":2}')
    assert len(client._all) == 0 and answers == []


async def test_a_connection_the_server_closed_is_left_for_a_new_one() -> None:
    seen: list[bytes] = []
    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n"]
    async with await _server(answers, seen, close_after=1) as server:
        client = HookClient(_url(server), connections=1)
        assert await client.post("/a", b"1", {}) == 200
        await asyncio.sleep(0.05)  # the server has closed the kept connection by now
        assert await client.post("/b", b"2", {}) == 409
        await client.aclose()
    assert [request.split(b" ")[1] for request in seen] == [b"/a", b"/b"]


async def test_a_server_that_is_not_there_answers_zero() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HookClient(f"http://127.0.0.1:{port}", connections=1)
    assert await client.post("/webhooks/gitlab", b"{}", {}) == 0
