"""Import and export of one account's mail as Maildir++ or mbox, folder by folder.

Sources (:func:`sources`) are found by looking at the path, never by its name:

- a **Maildir++** tree (``cur/`` or ``new/`` in it): its root is INBOX and each ``.a.b``
  directory the folder ``a/b`` (modified UTF-7 names, as Dovecot, mutt and our store write
  them). Flags come from the ``:2,`` letters of each file name (lower-case letters are the
  keywords of ``dovecot-keywords``), the internal date from the file's mtime (Dovecot's
  convention, which our store follows too).
- an **mbox** file: one folder.
- a **directory of mbox files** (as :func:`export_account` writes them, or Thunderbird's
  ``.sbd`` directories): each file that starts with a ``From `` line is the folder named by
  its path, without a ``.mbox`` suffix.

Messages go into the account through :class:`mailserver.interfaces.IMailbox.append`, one at
a time in the source's order, so UIDs ascend in that order and quota and index stay right;
a missing folder is created with ``create_folder``. Export reads through the same
interfaces and writes a Maildir++ tree (byte-exact files named ``<unique>:2,<flags>``, mtime
= internal date, keywords in ``dovecot-keywords``) or a directory with one ``<folder>.mbox``
per folder (:mod:`mailserver.store.mbox`).

The file work blocks: :func:`import_sources` reads each message through ``in_thread`` (the
store's thread pool) and awaits the store's appends on the reactor; :func:`export_account`
blocks throughout and is run in a worker thread (it only reads the index).
"""

from __future__ import annotations

import io
import os
import string
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mailserver import durable
from mailserver.errors import NoSuchFolder
from mailserver.interfaces import IAccount
from mailserver.store import maildir, mbox
from mailserver.store.backup import sync_tree
from mailserver.store.mbox import Message

#: The keyword file of a Dovecot maildir: ``<n> <keyword>`` lines, letter ``a`` + n.
KEYWORDS_FILE = "dovecot-keywords"
KEYWORD_LETTERS = string.ascii_lowercase
FORMATS = ("maildir", "mbox")

#: ``progress(done, total)`` after each message.
Progress = Callable[[int, int], None]


class TransferError(Exception):
    """The source or target cannot be used: the text says why and what to do."""


@dataclass(frozen=True)
class Source:
    """One folder's worth of messages in an import source."""

    folder: str
    kind: str  # "maildir" or "mbox"
    path: str
    count: int


# -- sources ---------------------------------------------------------------------------


def is_maildir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cur")) or os.path.isdir(os.path.join(path, "new"))


def detect(path: str) -> str:
    """``maildir`` or ``mbox`` (a file or a directory of them); TransferError otherwise."""
    if os.path.isfile(path):
        if mbox.is_mbox(path):
            return "mbox"
        raise TransferError(f"{path} is not an mbox file (it does not start with 'From ')")
    if os.path.isdir(path):
        return "maildir" if is_maildir(path) else "mbox"
    raise TransferError(f"{path} does not exist")


def sources(path: str, into: str | None = None) -> list[Source]:
    """The folders found at ``path`` (see the module docstring). ``into`` puts them all
    under that folder (a single mbox file goes into it; default INBOX)."""
    if not os.path.exists(path):
        raise TransferError(f"{path} does not exist")
    if os.path.isfile(path):
        detect(path)
        return [Source(into or "INBOX", "mbox", path, mbox.count(path))]
    if is_maildir(path):
        found = [Source(_under(into, name), "maildir", folder, len(_maildir_files(folder)))
                 for name, folder in _maildir_folders(path)]
    else:
        found = [Source(_under(into, name), "mbox", file, mbox.count(file))
                 for name, file in _mbox_files(path)]
    if not found:
        raise TransferError(
            f"{path} holds no maildir (cur/, new/) and no mbox file (starting with 'From ')"
        )
    return found


def _under(into: str | None, name: str) -> str:
    if into is None:
        return name
    return into if name == "INBOX" else f"{into}/{name}"


def _maildir_folders(root: str) -> list[tuple[str, str]]:
    found = [("INBOX", root)]
    for entry in sorted(os.listdir(root)):
        full = os.path.join(root, entry)
        if entry.startswith(".") and entry not in (".", "..") and is_maildir(full):
            try:
                found.append((maildir.folder_name(entry), full))
            except ValueError:
                continue
    return found


def _mbox_files(root: str) -> list[tuple[str, str]]:
    found = []
    for current, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(current, name)
            empty = name.endswith(".mbox") and os.path.getsize(full) == 0  # an empty folder
            if not (empty or mbox.is_mbox(full)):
                continue
            relative = os.path.relpath(full, root).split(os.sep)
            levels = [level.removesuffix(".sbd") for level in relative[:-1]]
            levels.append(relative[-1].removesuffix(".mbox"))
            folder = "/".join(levels)
            found.append(("INBOX" if folder.upper() == "INBOX" else folder, full))
    return found


def _maildir_files(folder: str) -> list[tuple[str, str]]:
    """(subdir, name) of every message file of a maildir, oldest first (by mtime, name)."""
    files = []
    for sub in ("new", "cur"):
        directory = os.path.join(folder, sub)
        for name in os.listdir(directory) if os.path.isdir(directory) else ():
            if not name.startswith("."):
                full = os.path.join(directory, name)
                if os.path.isfile(full):
                    files.append((os.stat(full).st_mtime, name, sub))
    return [(sub, name) for _mtime, name, sub in sorted(files)]


def read_keywords(folder: str) -> dict[str, str]:
    """Letter -> keyword from a Dovecot ``dovecot-keywords`` file (empty when absent)."""
    try:
        with open(os.path.join(folder, KEYWORDS_FILE), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return {}
    found = {}
    for line in lines:
        number, _, keyword = line.partition(" ")
        if number.isdigit() and int(number) < len(KEYWORD_LETTERS) and keyword:
            found[KEYWORD_LETTERS[int(number)]] = keyword
    return found


def read_maildir(folder: str) -> Iterator[Message]:
    """Every message of one maildir folder with its flags and internal date."""
    keywords = read_keywords(folder)
    for sub, name in _maildir_files(folder):
        path = os.path.join(folder, sub, name)
        try:
            with open(path, "rb") as f:
                data = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            continue  # moved by a client meanwhile
        base, flags = maildir.split_name(name)
        _, _, info = name.partition(":2,")
        extra = {keywords[c] for c in info if c in keywords} if ":2," in name else set()
        if b"\r\n" not in data:
            data = data.replace(b"\n", b"\r\n")
        yield Message(data, flags | frozenset(extra), mtime)


def read_source(source: Source) -> Iterator[Message]:
    return read_maildir(source.path) if source.kind == "maildir" else mbox.read(source.path)


# -- import ------------------------------------------------------------------------------


@dataclass
class ImportReport:
    folders_created: list[str] = field(default_factory=list)
    messages: int = 0


#: ``in_thread(function, *args)``: run blocking work off the reactor, e.g.
#: :meth:`mailserver.store.maildir_store.MaildirStore.in_thread`.
InThread = Callable[..., Awaitable[Any]]


async def import_sources(
    account: IAccount,
    found: list[Source],
    progress: Progress,
    report: ImportReport,
    in_thread: InThread,
) -> ImportReport:
    """Append every message of ``found`` to ``account`` (folders created as needed), in
    order; ``report`` counts what is done, also when an append fails (e.g. QuotaExceeded,
    which is raised to the caller). The source files are read through ``in_thread``."""
    total = sum(source.count for source in found)
    for source in found:
        try:
            mailbox = account.folder(source.folder)
        except NoSuchFolder:
            await account.create_folder(source.folder)
            report.folders_created.append(source.folder)
            mailbox = account.folder(source.folder)
        messages = read_source(source)
        while (message := await in_thread(next, messages, None)) is not None:
            await mailbox.append(io.BytesIO(message.data), message.flags, message.internaldate)
            report.messages += 1
            progress(report.messages, total)
    return report


# -- export ------------------------------------------------------------------------------


def prepare_target(path: str) -> None:
    """Create ``path`` as a new directory; TransferError when it exists and is not empty."""
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise TransferError(f"{path} exists and is not an empty directory; give a new one")
    os.makedirs(path, mode=0o700, exist_ok=True)


def mbox_path(root: str, folder: str) -> str:
    """The file of ``folder`` in an mbox export: ``root/<a>/<b>.mbox`` for ``a/b``."""
    return os.path.join(root, *folder.split("/")) + ".mbox"


@dataclass
class ExportReport:
    folders: int = 0
    messages: int = 0
    keywords_dropped: int = 0  # beyond the 26 a Dovecot maildir folder can name


def export_account(
    account: IAccount,
    root: str,
    fmt: str,
    progress: Progress,
    only: list[str] | None = None,
    fsync: bool = True,
) -> ExportReport:
    """Write every folder of ``account`` (or those in ``only``) under ``root`` in ``fmt``;
    with ``fsync`` every file is on stable storage when it returns."""
    if fmt not in FORMATS:
        raise TransferError(f"unknown format {fmt!r}: give one of {', '.join(FORMATS)}")
    folders = [info for info in account.list_folders() if only is None or info.name in only]
    missing = sorted(set(only or ()) - {info.name for info in folders})
    if missing:
        raise TransferError(f"{account.address} has no folder {', '.join(missing)}")
    total = sum(info.exists for info in folders)
    report = ExportReport()
    for info in folders:
        mailbox = account.folder(info.name)
        messages = mailbox.messages(list(mailbox.uids()), meta=False)
        if fmt == "mbox":
            target = mbox_path(root, info.name)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            with open(target, "xb") as out:
                for message in messages:
                    with message.open() as f:
                        data = f.read()
                    out.write(mbox.entry(data, message.info.flags, message.info.internaldate))
                    report.messages += 1
                    progress(report.messages, total)
        else:
            writer = _MaildirFolder(root, info.name)
            for message in messages:
                with message.open() as f:
                    writer.add(f.read(), message.info.flags, message.info.internaldate)
                report.messages += 1
                progress(report.messages, total)
            report.keywords_dropped += writer.finish()
        report.folders += 1
    if fsync:  # every file and directory written, with one sync() rather than one per file
        sync_tree(root)
    return report


class _MaildirFolder:
    """Writes one folder of a Maildir++ export."""

    def __init__(self, root: str, name: str) -> None:
        self.path = os.path.join(root, maildir.folder_dirname(name))
        maildir.make_maildir(self.path, name != "INBOX")
        self.letters: dict[str, str] = {}
        self.dropped = 0

    def add(self, data: bytes, flags: frozenset[str], internaldate: float) -> None:
        letters = maildir.flags_suffix(flags)
        for keyword in sorted(f for f in flags if not f.startswith("\\") and f != "$Forwarded"):
            letter = self.letters.get(keyword)
            if letter is None and len(self.letters) < len(KEYWORD_LETTERS):
                letter = self.letters[keyword] = KEYWORD_LETTERS[len(self.letters)]
            if letter is None:
                self.dropped += 1
            else:
                letters += letter
        info = letters[:3] + "".join(sorted(letters[3:]))  # ASCII order (maildir spec)
        base = maildir.unique_name()
        temporary = os.path.join(self.path, "tmp", base)
        durable.write_new(temporary, data, fsync=False)  # one sync at the end
        os.utime(temporary, (internaldate, internaldate))
        os.rename(temporary, os.path.join(self.path, "cur", base + info))

    def finish(self) -> int:
        """Write ``dovecot-keywords``; how many keywords could not be named."""
        if self.letters:
            lines = "".join(
                f"{KEYWORD_LETTERS.index(letter)} {keyword}\n"
                for keyword, letter in sorted(self.letters.items(), key=lambda kv: kv[1])
            )
            durable.write_atomically(os.path.join(self.path, KEYWORDS_FILE), lines.encode())
        return self.dropped
