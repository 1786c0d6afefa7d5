"""The durable-write module: whole files or none."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys

import pytest

from mailserver import durable


class Exploding(io.RawIOBase):
    """A source that yields some bytes, then fails like a dropped connection."""

    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.sent > 200_000:
            raise ConnectionError("peer went away")
        buffer[: len(buffer)] = b"x" * len(buffer)
        self.sent += len(buffer)
        return len(buffer)


def test_write_new_then_publish(tmp_path):
    """A written file appears under its final name with exactly the bytes given."""
    (tmp_path / "tmp").mkdir()
    (tmp_path / "new").mkdir()
    temporary, final = tmp_path / "tmp" / "m", tmp_path / "new" / "m"
    assert durable.write_new(str(temporary), io.BytesIO(b"body"), prefix=b"head ") == 9
    durable.publish(str(temporary), str(final))
    assert final.read_bytes() == b"head body"
    assert not temporary.exists()
    assert oct(final.stat().st_mode & 0o777) == "0o600"


def test_failed_write_leaves_nothing(tmp_path):
    """A source failing mid-copy leaves no partial file behind."""
    path = tmp_path / "partial"
    with pytest.raises(ConnectionError):
        durable.write_new(str(path), io.BufferedReader(Exploding()))
    assert not path.exists()


def test_write_new_never_overwrites(tmp_path):
    """Creating over an existing name fails instead of clobbering it."""
    path = tmp_path / "taken"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        durable.write_new(str(path), b"new")
    assert path.read_bytes() == b"old"


def test_link_into_shares_the_inode(tmp_path):
    """link_into gives a second name to the same bytes."""
    source = tmp_path / "a"
    source.write_bytes(b"x")
    durable.link_into(str(source), str(tmp_path / "b"))
    assert os.stat(source).st_ino == os.stat(tmp_path / "b").st_ino


def test_write_atomically_replaces(tmp_path):
    """write_atomically replaces content and leaves no temporary file."""
    path = tmp_path / "state"
    durable.write_atomically(str(path), b"one")
    durable.write_atomically(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["state"]


def test_write_new_of_bytes_writes_prefix_and_bytes(tmp_path):
    """Bytes (written straight to the descriptor) land after the prefix, whole, mode 0600,
    and the count returned is the file's size."""
    path = tmp_path / "m"
    data = os.urandom(300_000)
    assert durable.write_new(str(path), data, prefix=b"Return-Path: <a@b>\r\n") == 20 + 300_000
    assert path.read_bytes() == b"Return-Path: <a@b>\r\n" + data
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_write_new_of_bytes_that_fails_leaves_nothing(tmp_path):
    """A write of bytes that fails part-way (here: past the process's file size limit,
    EFBIG) removes the partial file and raises the error."""
    path = tmp_path / "big"
    script = (
        "import resource, signal, sys\n"
        "from mailserver import durable\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    durable.write_new(sys.argv[1], b'x' * 100_000, prefix=b'head')\n"
        "except OSError as error:\n"
        "    print(error.errno)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str(errno.EFBIG)
    assert not path.exists()
