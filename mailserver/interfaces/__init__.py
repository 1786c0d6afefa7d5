"""Contracts between the protocol, auth and storage layers (a leaf package)."""

from mailserver.interfaces.auth import IUserDirectory
from mailserver.interfaces.delivery import (
    IClassified,
    IDelivery,
    IDeliveryTarget,
    IFolderChoice,
)
from mailserver.interfaces.filter import (
    ICheck,
    ICheckSession,
    IFilterSession,
    IJunkFeedback,
    ISessionFilter,
)
from mailserver.interfaces.header_index import IHeaderIndex
from mailserver.interfaces.spool import ISpool
from mailserver.interfaces.store import (
    IAccount,
    IMailbox,
    IMailboxRecords,
    IMailStore,
    IMessage,
)
from mailserver.interfaces.trace import ITraceLog

__all__ = [
    "IAccount",
    "ICheck",
    "ICheckSession",
    "IClassified",
    "IDelivery",
    "IDeliveryTarget",
    "IFilterSession",
    "IFolderChoice",
    "IHeaderIndex",
    "IJunkFeedback",
    "IMailStore",
    "IMailbox",
    "IMailboxRecords",
    "IMessage",
    "ISessionFilter",
    "ISpool",
    "ITraceLog",
    "IUserDirectory",
]
