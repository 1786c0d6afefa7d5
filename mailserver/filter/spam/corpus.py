"""Labelled training messages from the places mail is kept: directories, tarballs, maildirs
and mbox files.

:func:`examples` walks its arguments and yields ``Example(name, message, is_spam)``:

- a **directory**: every regular file below it (a maildir's ``cur``/``new`` included; its
  ``tmp`` and dot-files skipped), labelled by the nearest path component named ``spam``
  or ``ham`` (case-insensitive; ``junk`` counts as spam) or by ``label``;
- a **.tar.gz / .tgz / .tar** file: every member, labelled the same way from its member
  path (the shared corpus format: ``spam/<source>/<file>``, ``ham/...``);
- an **mbox** file (any other file starting with ``From ``): each message, labelled by
  ``label`` or by the file's own path;
- any other file: one message.

A path with no label (and no ``label`` given) is an error naming it, raised before
anything is trained. Every message is capped at :data:`MAX_MESSAGE` bytes.

:func:`fold_of` is the deterministic split: SHA-256 of the body (after the first blank line,
white space runs collapsed) under a salt, first 8 hex digits modulo ``folds``. It is the same
kind of split as the corpus's own train/held-out split, with a different salt, so it is a
fresh split of the training part, and copies of one body stay on one side.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["MAX_MESSAGE", "CorpusError", "Example", "examples", "fold_of", "label_of"]

#: Bytes read of one message at most.
MAX_MESSAGE = 4 * 1024 * 1024

_SPAM = {"spam", "junk", "spam-train", "spam_train"}
_HAM = {"ham", "ham-train", "ham_train"}
_WHITE = re.compile(rb"\s+")


class CorpusError(ValueError):
    """A training path that cannot be used; the message says which and what to do."""


@dataclass(frozen=True)
class Example:
    name: str
    message: bytes
    is_spam: bool


def label_of(path: str) -> bool | None:
    """True for spam, False for ham, None when no component of ``path`` names a class."""
    for part in reversed(re.split(r"[\\/]", path)):
        lower = part.lower()
        stem = lower.split(".", 1)[0]
        if lower in _SPAM or stem in _SPAM:
            return True
        if lower in _HAM or stem in _HAM:
            return False
    return None


def _label(path: str, given: bool | None) -> bool:
    if given is not None:
        return given
    found = label_of(path)
    if found is None:
        raise CorpusError(
            f"cannot tell whether {path} is spam or ham: put it under a directory named "
            "spam or ham, or give --label spam|ham"
        )
    return found


def examples(paths: list[str], label: bool | None = None) -> Iterator[Example]:
    """Every labelled message under ``paths`` (see the module doc), in a stable order."""
    for path in paths:
        if os.path.isdir(path):
            yield from _directory(path, label)
        elif os.path.isfile(path):
            yield from _file(path, label)
        else:
            raise CorpusError(f"{path} does not exist: give a directory, a .tar.gz, "
                              "a maildir or an mbox file")


def _directory(root: str, label: bool | None) -> Iterator[Example]:
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            name for name in subdirectories if not name.startswith(".") and name != "tmp"
        )
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(directory, name)
            yield Example(path, _read(path), _label(path, label))


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(MAX_MESSAGE)


def _file(path: str, label: bool | None) -> Iterator[Example]:
    lower = path.lower()
    if lower.endswith((".tar.gz", ".tgz", ".tar")):
        yield from _tarball(path, label)
        return
    with open(path, "rb") as handle:
        start = handle.read(5)
    if start == b"From ":
        is_spam = _label(path, label)
        box = mailbox.mbox(path, create=False)
        try:
            for key in box.keys():
                message = box.get_bytes(key)[:MAX_MESSAGE]
                yield Example(f"{path}#{key}", message, is_spam)
        finally:
            box.close()
        return
    yield Example(path, _read(path), _label(path, label))


def _tarball(path: str, label: bool | None) -> Iterator[Example]:
    try:
        archive = tarfile.open(path)
    except (tarfile.TarError, OSError) as error:
        raise CorpusError(f"cannot read {path} as a tar archive: {error}") from None
    with archive:
        for member in archive:
            if not member.isfile():
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            is_spam = _label(member.name, label)
            yield Example(f"{path}:{member.name}", handle.read(MAX_MESSAGE), is_spam)


def fold_of(message: bytes, folds: int = 5, salt: bytes = b"mailserver-spam") -> int:
    """The fold (0..folds-1) of ``message`` by its body's hash (see the module doc)."""
    start = message.find(b"\n\n")
    body = message[start + 2 :] if start >= 0 else b""
    digest = hashlib.sha256(salt + b"\0" + _WHITE.sub(b" ", body)).hexdigest()
    return int(digest[:8], 16) % folds

