"""Moving mail into Junk or out of it is the user's spam judgement: the IMAP listener hands
it to its IJunkFeedback (here the real VerdictFeedback), which records a "user" verdict on
the message in the store, over both providers."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from mailserver.filter.feedback import USER_CLASSIFIER, VerdictFeedback
from mailserver.imap.commands.copy import junk_judgement
from mailserver.types import SpecialUse
from tests.imap.conftest import in_thread, message


@pytest.mark.parametrize(
    ("source", "target", "judgement"),
    [
        (None, SpecialUse.JUNK, True),  # INBOX -> Junk
        (SpecialUse.ARCHIVE, SpecialUse.JUNK, True),
        (SpecialUse.JUNK, None, False),  # Junk -> INBOX
        (SpecialUse.JUNK, SpecialUse.ARCHIVE, False),
        (SpecialUse.JUNK, SpecialUse.TRASH, None),  # deleting spam says nothing
        (SpecialUse.JUNK, SpecialUse.JUNK, None),
        (None, SpecialUse.TRASH, None),
        (None, SpecialUse.ARCHIVE, None),
    ],
)
def test_judgement(source, target, judgement):
    assert junk_judgement(source, target) is judgement


@pytest_twisted.ensureDeferred
async def test_move_to_junk_and_back_records_user_verdicts(imap_server):
    judged: list[tuple[str, str, list[int], bool]] = []
    both = Deferred()

    def on_judged(*args):
        judged.append(args)
        if len(judged) == 2:
            both.callback(None)

    imap_server.factory.feedback = VerdictFeedback(on_judged=on_judged)
    await imap_server.deliver(message("buy now"))
    await imap_server.deliver(message("hello"))

    def session() -> None:
        client = imap_server.imaplib()
        client.select("INBOX")
        assert client.uid("MOVE", "1", "Junk")[0] == "OK"
        assert client.uid("COPY", "2", "Archive")[0] == "OK"  # says nothing
        client.select("Junk")
        assert client.uid("MOVE", "1", "INBOX")[0] == "OK"
        client.logout()

    await in_thread(session)
    await both  # the feedback runs after the tagged reply
    assert [(folder, spam) for _user, folder, _uids, spam in judged] == [
        ("Junk", True), ("INBOX", False)]
    [(_user, _folder, [inbox_uid], _spam)] = judged[1:]
    verdict = imap_server.folder("INBOX").message(inbox_uid).info.spam
    assert verdict.classifier == USER_CLASSIFIER and verdict.is_spam is False
    assert imap_server.folder("Archive").message(1).info.spam is None
