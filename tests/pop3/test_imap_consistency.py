"""POP3 and IMAP on one store: what a POP3 session commits at QUIT is what an IMAP session
with the INBOX selected sees next (EXPUNGE for a deleted message, \\Seen for a retrieved
one), and POP3's unique ids are the UIDVALIDITY and UID that IMAP shows."""

from __future__ import annotations

import imaplib

from tests.imap.conftest import POLICY as IMAP_POLICY
from tests.imap.conftest import start_imap
from tests.pop3.conftest import PASSWORD, in_thread, message


async def test_pop3_update_reaches_a_selected_imap_session(maildir_pop3):
    store, directory = maildir_pop3.store, maildir_pop3.directory
    imap, imap_port = start_imap(store, directory, IMAP_POLICY, None)
    try:
        for subject in ("one", "two", "three"):
            await maildir_pop3.deliver(message(subject))

        def scenario():
            client = imaplib.IMAP4("127.0.0.1", imap.port, timeout=10)
            client.login("alice@example.org", PASSWORD)
            client.select("INBOX")
            status = client.status("INBOX", "(UIDVALIDITY)")[1][0]
            uids = client.uid("SEARCH", "ALL")[1][0].split()
            pop = maildir_pop3.poplib()
            unique_ids = [line.split()[1] for line in pop.uidl()[1]]
            pop.retr(2)
            pop.dele(1)
            pop.quit()
            client.noop()
            expunged = client.response("EXPUNGE")[1]
            client.response("FETCH")  # the flag change notice; the UID FETCH says it again
            flags = client.uid("FETCH", "1:*", "(FLAGS)")[1]
            client.logout()
            return status, uids, unique_ids, expunged, flags

        status, uids, unique_ids, expunged, flags = await in_thread(scenario)
        uidvalidity = status.split(b"UIDVALIDITY ")[1].rstrip(b")")
        assert unique_ids == [uidvalidity + b"." + uid for uid in uids]
        assert expunged == [b"1"]
        assert len(flags) == 2
        assert b"\\Seen" in flags[0] and b"\\Seen" not in flags[1]
    finally:
        await imap_port.stopListening()
