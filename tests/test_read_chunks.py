"""The bytes handed to data_received(): every chunk is the protocol's to
keep, hash, view or drop. uvrs refills the bytes object of a small read for
the next read of the same length when nothing else refers to it any more;
these tests check that nobody can tell: kept chunks, views of chunks and
cached hashes all stay those of the bytes received."""

import asyncio

import pytest

from _util import LOCALHOST, arun, payload

pytestmark = pytest.mark.timeout(10)

SIZE = 1024
COUNT = 40


class ChunkProtocol(asyncio.Protocol):
    """Reads chunks; `mode` decides what it does with each one."""

    def __init__(self, loop, mode):
        self.mode = mode
        self.kept = []
        self.views = []
        self.hashes = []
        self.copies = []
        self.total = 0
        self.waiter = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        assert type(data) is bytes
        self.copies.append(bytes(bytearray(data)))
        if self.mode == "keep":
            self.kept.append(data)
        elif self.mode == "view":
            self.views.append(memoryview(data))
        elif self.mode == "hash":
            # hash() caches the value in the object; a later chunk of the
            # same length must not come back with this one's hash.
            self.hashes.append((hash(data), hash(bytes(bytearray(data)))))
            {data: 1}.clear()
        self.total += len(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def exchange(loop, mode):
    """The server sends COUNT distinct messages of SIZE bytes one at a time,
    each after the client has read the one before (separate reads of the
    same length)."""
    messages = [payload(SIZE, seed=i) for i in range(COUNT)]
    server_side = []

    class Sender(asyncio.Protocol):
        def connection_made(self, transport):
            server_side.append(transport)

    server = await loop.create_server(Sender, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await loop.create_connection(
        lambda: ChunkProtocol(loop, mode), LOCALHOST, port)
    while not server_side:
        await asyncio.sleep(0)
    peer = server_side[0]
    for i, msg in enumerate(messages):
        client.waiter = loop.create_future()
        peer.write(msg)
        while client.total < SIZE * (i + 1):
            await client.waiter
            client.waiter = loop.create_future()
    peer.close()
    await client.lost
    client.transport.close()
    server.close()
    await server.wait_closed()
    assert b"".join(client.copies) == b"".join(messages)
    return client, messages


def test_kept_chunks_keep_their_bytes(loop):
    client, messages = arun(loop, exchange(loop, "keep"))
    assert b"".join(client.kept) == b"".join(messages)
    assert [bytes(c) for c in client.kept] == client.copies
    # Every kept chunk is its own object.
    assert len({id(c) for c in client.kept}) == len(client.kept)


def test_views_of_chunks_keep_their_bytes(loop):
    client, messages = arun(loop, exchange(loop, "view"))
    assert b"".join(v.tobytes() for v in client.views) == b"".join(messages)


def test_hash_of_each_chunk_is_its_own(loop):
    client, _ = arun(loop, exchange(loop, "hash"))
    assert len(client.hashes) == len(client.copies)
    for cached, fresh in client.hashes:
        assert cached == fresh
    # Distinct contents: the hashes differ (a stale cached hash would repeat).
    assert len({h for h, _ in client.hashes}) == len(client.hashes)


def test_dropped_chunks_arrive_intact(loop):
    client, messages = arun(loop, exchange(loop, "drop"))
    assert client.copies == messages
