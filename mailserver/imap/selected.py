"""The selected mailbox as one session sees it: message sequence numbers that never shift
silently.

The session keeps the UIDs of the mailbox in sequence-number order (its *view*) and changes
the view only in :meth:`SelectedMailbox.sync`, which the server calls at the end of a command,
before the tagged response, and while idling (RFC 9051 §5.2, §7.4.1, §7.5.1):

- new messages are announced with ``EXISTS`` (and ``RECENT`` for IMAP4rev1 clients);
- flag changes made by other sessions are announced with ``FETCH (FLAGS ...)``;
- messages expunged by anybody are announced with ``EXPUNGE`` and leave the view, but not at
  the end of FETCH, STORE or SEARCH (RFC 9051 §7.4.1: that would change the numbers the
  client is using), only after other commands. Until then a message expunged elsewhere keeps
  its number; the store no longer has it, so commands on it answer ``[EXPUNGEISSUED]``.

With CONDSTORE enabled (RFC 7162 §3.1) every FETCH the view sends carries ``MODSEQ``; with
QRESYNC enabled (§3.2.10) expunges are one ``VANISHED uid-set`` instead of ``EXPUNGE``s, under
the same rules. :meth:`SelectedMailbox.vanished_earlier` and
:meth:`SelectedMailbox.changes_since` answer a QRESYNC resynchronisation (SELECT ... QRESYNC,
UID FETCH ... VANISHED).

Detecting changes is cheap when nothing changed: the folder's (UIDNEXT, EXISTS, HIGHESTMODSEQ)
are compared with the last ones seen; only when they differ are the new UIDs read, and only
when the counts do not add up is the whole UID list read again.

The view's UIDs are an ``array('I')`` (4 bytes a message). Opening a folder whose snapshot the
listener keeps at the folder's current state (:mod:`mailserver.imap.snapshots`: a re-SELECT
or EXAMINE of an unchanged folder, by this session or another) copies that array instead of
walking the folder's flags.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from mailserver.imap import response
from mailserver.imap.commands.base import bad
from mailserver.imap.sequence import SequenceSet
from mailserver.imap.snapshots import FolderSnapshot, FolderSnapshots, State, key_of, state_of
from mailserver.interfaces import IMailbox
from mailserver.types import SEEN, SYSTEM_FLAGS, FlagInfo, FolderInfo

if TYPE_CHECKING:
    from mailserver.imap.factory import RecentClaims

__all__ = ["SYSTEM_FLAG_LIST", "SelectedMailbox", "modseq_value"]

#: RFC 9051 §2.3.2, in the order of the RFC's examples.
SYSTEM_FLAG_LIST = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"
#: QRESYNC seq-match data beyond this many pairs is ignored (a client sends a sample).
MAX_SEQ_MATCH = 100_000
#: Distinct flag sets whose FLAGS text a view keeps serialised (see ``flags_for``).
FLAG_LISTS_KEPT = 256
#: The array type code of a view's UIDs: unsigned, at least 32 bits (RFC 9051 §2.3.1.1).
UID_TYPE = "I" if array("I").itemsize >= 4 else "L"


class SelectedMailbox:
    """One session's view of its selected mailbox (see the module docstring).

    ``recent_key`` and ``claims`` (a :class:`~mailserver.imap.factory.RecentClaims`) track
    ``\\Recent`` for IMAP4rev1 clients; ``rev1`` says whether to report it. ``snapshots``
    (the listener's :class:`~mailserver.imap.snapshots.FolderSnapshots`) lets :meth:`open`
    reuse what an earlier SELECT of the unchanged folder read; ``user`` names the folder's
    owner in their keys.
    """

    def __init__(
        self,
        mailbox: IMailbox,
        readonly: bool,
        *,
        claims: RecentClaims | None = None,
        recent_key: tuple[str, str, int] | None = None,
        rev1: bool = True,
        condstore: bool = False,
        qresync: bool = False,
        snapshots: FolderSnapshots | None = None,
        user: str = "",
    ) -> None:
        self.mailbox = mailbox
        self.name: str = mailbox.name
        self.readonly = readonly
        self.rev1 = rev1
        #: RFC 7162: MODSEQ in every FETCH (CONDSTORE), VANISHED for expunges (QRESYNC).
        self.condstore = condstore
        self.qresync = qresync
        self.uids: array[int] = array(UID_TYPE)
        #: UIDs still in the view whose messages the store no longer has.
        self.gone: set[int] = set()
        self.recent: set[int] = set()
        self.keywords: set[str] = set()
        #: SEARCH RETURN (SAVE) result as UIDs (RFC 5182), None before any.
        self.saved: list[int] | None = None
        self.first_unseen: int | None = None
        self._claims = claims
        self._recent_key = recent_key
        self._snapshots = snapshots
        self._user = user
        self._state: tuple[int, int, int] = (0, 0, 0)
        self._modseq = 0
        #: Flag changes this session already reported itself: uid -> modseq.
        self._reported: dict[int, int] = {}
        self._flag_lists: dict[frozenset[str], bytes] = {}

    # -- opening ----------------------------------------------------------------------------

    def open(self, info: FolderInfo | None = None) -> FolderInfo:
        """Read the folder for SELECT/EXAMINE: its info (``info`` when the caller has just
        read it), UIDs, keywords, first unseen. From the listener's snapshot when it holds
        the folder at its current state, else by a walk of the folder's flags (kept as a
        snapshot when the folder did not change meanwhile)."""
        if info is None:
            info = self.mailbox.info()
        state = state_of(info)
        key = key_of(self._user, self.name, info)
        snapshots = self._snapshots
        snapshot = None if snapshots is None else snapshots.get(key, state)
        if snapshot is None:
            snapshot = self._read(state)
            if snapshots is not None:
                if state_of(self.mailbox.info()) == state:
                    snapshots.put(key, snapshot)
        self.uids = array(UID_TYPE, snapshot.uids)  # this view's own copy
        self.keywords = set(snapshot.keywords)
        self.first_unseen = snapshot.first_unseen
        self._state = state
        self._modseq = info.highestmodseq
        self.recent = self._recent(self.uids)
        return info

    def _read(self, state: State) -> FolderSnapshot:
        """One walk of the folder's flags: its UIDs, keywords and first unseen message."""
        uids = array(UID_TYPE)
        append = uids.append
        keywords: set[str] = set()
        known: set[frozenset[str]] = set()  # keywords looked at once per distinct flag set
        first_unseen = None
        for flag_info in self.mailbox.flags():
            append(flag_info.uid)
            flags = flag_info.flags
            if flags not in known:
                known.add(flags)
                keywords.update(f for f in flags if not f.startswith("\\"))
                # The first unseen message is the first with an unseen flag set: looked at
                # here, once per distinct set, too.
                if first_unseen is None and SEEN not in flags:
                    first_unseen = len(uids)
        return FolderSnapshot(state, uids, frozenset(keywords), first_unseen)

    def _recent(self, uids: array[int]) -> set[int]:
        if self._claims is None or self._recent_key is None or not self.rev1:
            return set()
        return self._claims.recent(self._recent_key, uids, not self.readonly)

    # -- numbers --------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq(self, uid: int) -> int | None:
        """The message sequence number of ``uid``, or None when it is not in the view."""
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def resolve(self, sequence: SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """(sequence number, UID) of the messages a set names, ascending.

        A UID set names the UIDs of the view it contains (``*`` is the last UID); a
        sequence set must only name existing numbers, else the command is BAD (RFC 9051
        §9 seq-number: 1 to the number of messages). ``$`` is the saved search result.
        """
        pairs: list[tuple[int, int]] = []
        if sequence.saved:
            for saved_uid in self.saved or []:
                number = self.seq(saved_uid)
                if number is not None:
                    pairs.append((number, saved_uid))
            return sorted(pairs)
        uids = self.uids
        if uid:
            star = uids[-1] if uids else 0
            for first, last in sequence.resolved(star):
                start = bisect.bisect_left(uids, first)
                stop = bisect.bisect_right(uids, last)
                pairs.extend(zip(range(start + 1, stop + 1), uids[start:stop]))
            return pairs
        count = len(uids)
        for ends in sequence.ranges:
            for end in ends:
                if (end is None and count == 0) or (end is not None and end > count):
                    raise bad(f"Invalid message sequence number (the mailbox has {count})")
        for first, last in sequence.clamped(count):
            pairs.extend(zip(range(first, last + 1), uids[first - 1 : last]))
        return pairs

    # -- flags as the client sees them ------------------------------------------------------

    def flags_for(self, uid: int, flags: Iterable[str]) -> bytes:
        """The FLAGS value of a message: its stored flags, plus ``\\Recent`` for rev1."""
        recent = self.rev1 and uid in self.recent
        if not recent and isinstance(flags, frozenset):
            # A mailbox has few distinct flag sets: each is serialised once (FETCH 1:* FLAGS,
            # STORE 1:*), the memo bounded by FLAG_LISTS_KEPT.
            shown_text = self._flag_lists.get(flags)
            if shown_text is None:
                if len(self._flag_lists) >= FLAG_LISTS_KEPT:
                    self._flag_lists.clear()
                shown_text = response.flag_list(sorted(flags, key=_flag_order))
                self._flag_lists[flags] = shown_text
            return shown_text
        shown = sorted(flags, key=_flag_order)
        if recent:
            shown.append(RECENT)
        return response.flag_list(shown)

    def flag_responses(self) -> list[bytes]:
        """``FLAGS`` and ``OK [PERMANENTFLAGS]`` for the current keywords (RFC 9051 §7.3.5)."""
        defined = list(SYSTEM_FLAG_LIST) + sorted(self.keywords)
        permanent = [] if self.readonly else [*defined, "\\*"]
        return [
            response.untagged(b"FLAGS", response.flag_list(defined)),
            response.untagged_status(
                "OK",
                "Flags permitted" if permanent else "No permanent flags permitted",
                response_code=b"PERMANENTFLAGS " + response.flag_list(permanent),
            ),
        ]

    def new_keywords(self, flags: Iterable[str]) -> list[bytes]:
        """A new FLAGS response when ``flags`` hold keywords not announced yet."""
        fresh = {f for f in flags if not f.startswith("\\")} - self.keywords
        if not fresh:
            return []
        self.keywords |= fresh
        return self.flag_responses()

    def reported(self, changes: Iterable[FlagInfo]) -> None:
        """This session reported (or was told about) these changes itself: :meth:`sync`
        does not repeat them."""
        changes = list(changes)
        following = self._modseq + 1
        if changes and all(change.modseq == following for change in changes):
            # One change of this session's right after what the view knew (a STORE gives
            # every message it changed the same new modseq): nothing else can sit at that
            # modseq, so the view knows up to it, and sync() reads only what follows it.
            self._modseq = following
            return
        for change in changes:
            self._reported[change.uid] = change.modseq

    # -- synchronisation --------------------------------------------------------------------

    def sync(self, *, allow_expunge: bool) -> list[bytes]:
        """Bring the view up to date and return the untagged responses that say so."""
        info = self.mailbox.info()
        state = (info.uidnext, info.exists, info.highestmodseq)
        out: list[bytes] = []
        new: list[int] = []
        if state != self._state:
            last = self.uids[-1] if self.uids else 0
            new = list(self.mailbox.uids(last + 1))
            present = len(self.uids) - len(self.gone)
            if present + len(new) != info.exists:
                current = set(self.mailbox.uids(1, last)) if last else set()
                self.gone = {uid for uid in self.uids if uid not in current}
            if info.highestmodseq != self._modseq:
                out += self._flag_changes(self.mailbox.changed_since(self._modseq), last)
            self._state = state
            self._modseq = info.highestmodseq
            self._reported.clear()
        if allow_expunge and self.gone:
            out += self._expunge()
        if new:
            self.uids.extend(new)
            recent = self._recent(self.uids) if self.rev1 else set()
            self.recent |= recent
            out.append(response.untagged(b"%d" % len(self.uids), b"EXISTS"))
            if self.rev1:
                out.append(response.untagged(b"%d" % len(self.recent), b"RECENT"))
        return out

    def _flag_changes(self, changes: Iterable[FlagInfo], last: int) -> list[bytes]:
        out: list[bytes] = []
        fetches: list[bytes] = []
        for change in changes:
            if change.uid > last or change.uid in self.gone:
                continue
            if self._reported.get(change.uid) == change.modseq:
                continue
            number = self.seq(change.uid)
            if number is None:
                continue
            out += self.new_keywords(change.flags)
            fetches.append(self._flags_fetch(number, change, self.condstore))
        return out + fetches

    def _flags_fetch(self, number: int, change: FlagInfo, with_modseq: bool) -> bytes:
        values = [
            ("UID", b"%d" % change.uid),
            ("FLAGS", self.flags_for(change.uid, change.flags)),
        ]
        if with_modseq:  # RFC 7162 §3.1: UID and MODSEQ in every unsolicited FETCH
            values.append(("MODSEQ", modseq_value(change.modseq)))
        return response.fetch(number, values)

    # -- QRESYNC (RFC 7162 §3.2) ------------------------------------------------------------

    def vanished_earlier(
        self,
        modseq: int,
        ranges: Sequence[tuple[int, int]],
        seq_match: tuple[SequenceSet, SequenceSet] | None = None,
    ) -> list[bytes]:
        """``* VANISHED (EARLIER) uid-set``: the UIDs within ``ranges`` expunged after
        ``modseq`` (RFC 7162 §3.2.5.1, §3.2.6); nothing when there are none.

        When the store no longer knows that far back (it prunes old expunge records), every
        UID in ``ranges`` below UIDNEXT that the mailbox does not hold is reported: the client
        ignores UIDs it never had (§3.2.5.2 full resynchronisation). The client's
        ``seq_match`` data narrows that to the UIDs above the last of its (number, UID)
        pairs that still holds here: below it the client's view cannot be missing expunges.
        """
        expunged = self.mailbox.expunged_since(modseq)
        found: list[tuple[int, int]] = []
        if expunged is None:
            top = self.mailbox.info().uidnext - 1
            floor = self._matched_uid(seq_match) + 1
            for first, last in ranges:
                first = max(first, floor)
                last = min(last, top)
                start = first
                for uid in self.mailbox.uids(first, last) if first <= last else ():
                    if uid > start:
                        found.append((start, uid - 1))
                    start = uid + 1
                if start <= last:
                    found.append((start, last))
        else:
            within = _Within(ranges)
            found = [(uid, uid) for uid in expunged if within(uid)]
        if not found:
            return []
        uids = response.uid_set(SequenceSet(tuple(found)))
        return [response.untagged(b"VANISHED", b"(EARLIER)", uids)]

    def _matched_uid(self, seq_match: tuple[SequenceSet, SequenceSet] | None) -> int:
        """The highest UID of the client's (sequence number, UID) pairs that this view has at
        the same number (RFC 7162 §3.2.5.2); 0 for none, or for sets of unequal length."""
        if seq_match is None:
            return 0
        spans = [match.resolved(1) for match in seq_match]  # no "*": the star is unused
        sizes = [sum(last - first + 1 for first, last in span) for span in spans]
        if sizes[0] != sizes[1] or sizes[0] > MAX_SEQ_MATCH:
            return 0
        numbers, uids = ([n for first, last in span for n in range(first, last + 1)]
                         for span in spans)  # fmt: skip
        matched = [
            uid
            for number, uid in zip(numbers, uids)
            if 0 < number <= len(self.uids) and self.uids[number - 1] == uid
        ]
        return max(matched, default=0)

    def changes_since(self, modseq: int, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """``FETCH (UID FLAGS MODSEQ)`` for every message in the view and in the UID
        ``ranges`` (the client's known UIDs) changed after ``modseq`` (RFC 7162 §3.2.5),
        oldest change first."""
        out: list[bytes] = []
        within = _Within(ranges)
        for change in self.mailbox.changed_since(modseq):
            number = self.seq(change.uid)
            if number is not None and within(change.uid):
                out.append(self._flags_fetch(number, change, True))
        return out

    def _expunge(self) -> list[bytes]:
        """EXPUNGE responses for the gone messages, highest number first so that each number
        is still valid when the client reads it."""
        out = []
        if self.qresync:  # RFC 7162 §3.2.10: VANISHED replaces EXPUNGE
            gone = sorted(self.gone)
            out.append(response.untagged(b"VANISHED", response.uid_set(gone)))
            self.uids = array(UID_TYPE, [uid for uid in self.uids if uid not in self.gone])
            self.recent -= self.gone
        for index in range(len(self.uids) - 1, -1, -1):
            uid = self.uids[index]
            if uid in self.gone:
                out.append(response.untagged(b"%d" % (index + 1), b"EXPUNGE"))
                del self.uids[index]
                self.recent.discard(uid)
        if self.saved is not None:
            self.saved = [uid for uid in self.saved if uid not in self.gone]
        self.gone = set()
        return out

    def expunge_pending(self) -> bool:
        """True when expunges by another session wait to be reported."""
        return bool(self.gone)


def modseq_value(modseq: int) -> bytes:
    """The value of the ``MODSEQ`` fetch item: ``(n)`` (RFC 7162 §3.1.4.1)."""
    return b"(%d)" % modseq


class _Within:
    """Membership in sorted, non-overlapping UID ranges (as :meth:`SequenceSet.resolved`
    gives them), by bisection: a fragmented set of known UIDs costs a log, not a scan."""

    def __init__(self, ranges: Sequence[tuple[int, int]]) -> None:
        self.firsts = [first for first, _ in ranges]
        self.lasts = [last for _, last in ranges]

    def __call__(self, uid: int) -> bool:
        index = bisect.bisect_right(self.firsts, uid) - 1
        return index >= 0 and uid <= self.lasts[index]


def _flag_order(flag: str) -> tuple[int, str]:
    if flag in SYSTEM_FLAGS:
        return (0, str(SYSTEM_FLAG_LIST.index(flag)))
    return (1, flag)
