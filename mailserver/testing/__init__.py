"""Public test support for embedders' tests and ours (the names in ``__all__`` are the API;
the submodules' paths are private).

- In-memory providers that work for real and pass the same contract tests
  (``tests/contracts/``) as the maildir + LMDB ones: :class:`MemoryStore` (IMailStore, with
  :class:`MemoryAccount`, :class:`MemoryMailbox`, :class:`MemoryMessage`),
  :class:`MemoryDirectory` (IUserDirectory) and :class:`MemoryDeliveryTarget`
  (IDeliveryTarget, with :class:`MemoryDelivery`). Nothing touches the disk.
- :class:`RecordingTarget`: a delivery target that captures each committed message as a
  :class:`CapturedMessage` instead of delivering it.
- :class:`MailSystem`: SMTP, submission, IMAP and POP3 in this process on free loopback
  ports, over an in-memory or temporary-directory store, with outbound mail captured; waits
  fail with :class:`DeliveryTimeout`.
- :class:`ReactorThread`, :func:`greenlet_call` (:class:`BlockingCall`): blocking calls into
  the reactor for plain test functions; :mod:`mailserver.testing_pytest` is the pytest plugin
  with the ``mail_system`` fixture.
"""

from mailserver.testing.blocking import BlockingCall, ReactorThread, greenlet_call
from mailserver.testing.memory import (
    MemoryAccount,
    MemoryDelivery,
    MemoryDeliveryTarget,
    MemoryDirectory,
    MemoryMailbox,
    MemoryMessage,
    MemoryStore,
)
from mailserver.testing.recording import (
    CapturedMessage,
    DeliveryTimeout,
    RecordingDelivery,
    RecordingTarget,
)
from mailserver.testing.system import MailSystem, self_signed_tls

__all__ = [
    "BlockingCall",
    "CapturedMessage",
    "DeliveryTimeout",
    "MailSystem",
    "MemoryAccount",
    "MemoryDelivery",
    "MemoryDeliveryTarget",
    "MemoryDirectory",
    "MemoryMailbox",
    "MemoryMessage",
    "MemoryStore",
    "ReactorThread",
    "RecordingDelivery",
    "RecordingTarget",
    "greenlet_call",
    "self_signed_tls",
]
