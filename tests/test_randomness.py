"""mailserver.randomness: identifiers' random bytes, read from the kernel in blocks."""

from __future__ import annotations

import os
import threading

from hypothesis import given
from hypothesis import strategies as st

from mailserver.randomness import RandomBlocks, token_hex


class Counting:
    """A byte source that hands out 0, 1, 2, ... (mod 256) and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.next = 0

    def __call__(self, count: int) -> bytes:
        self.calls += 1
        out = bytes((self.next + i) % 256 for i in range(count))
        self.next += count
        return out


@given(st.lists(st.integers(min_value=1, max_value=100), max_size=60))
def test_every_byte_of_the_source_is_handed_out_at_most_once(sizes: list[int]) -> None:
    source = Counting()
    blocks = RandomBlocks(block=128, source=source)
    taken = [blocks.take(size) for size in sizes]
    assert [len(t) for t in taken] == sizes
    # positions in the source stream: slices of successive blocks never overlap
    stream_positions: list[int] = []
    block_start, used = -128, 128
    for size in sizes:
        if used + size > 128:
            block_start, used = block_start + 128, 0
        stream_positions.extend(range(block_start + used, block_start + used + size))
        used += size
    assert len(stream_positions) == len(set(stream_positions))


def test_one_read_from_the_kernel_serves_many_ids() -> None:
    source = Counting()
    blocks = RandomBlocks(block=4096, source=source)
    ids = [blocks.take(6) for _ in range(600)]
    assert source.calls == 1
    assert b"".join(ids) == Counting()(3600)  # the block, in order, each byte once


def test_a_request_larger_than_the_block_is_served_whole() -> None:
    blocks = RandomBlocks(block=16, source=os.urandom)
    assert len(blocks.take(100)) == 100


def test_threads_never_get_the_same_bytes() -> None:
    blocks = RandomBlocks(block=256)
    results: list[bytes] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [blocks.take(8) for _ in range(500)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2000
    assert len(set(results)) == 2000


def test_token_hex_has_the_secrets_shape() -> None:
    value = token_hex(6)
    assert len(value) == 12
    int(value, 16)
    assert token_hex(6) != value


def test_a_forked_child_does_not_reuse_the_parents_block() -> None:
    token_hex(4)  # the parent now holds a block with unread bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id, then leave at once
        os.close(read)
        os.write(write, token_hex(16).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = token_hex(16)
    assert len(child) == 32
    assert child != parent
