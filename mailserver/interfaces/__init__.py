"""Contracts between the protocol, auth and storage layers (a leaf package)."""

from mailserver.interfaces.auth import IUserDirectory
from mailserver.interfaces.delivery import IDelivery, IDeliveryTarget, IFolderChoice
from mailserver.interfaces.filter import IJunkFeedback
from mailserver.interfaces.spool import ISpool
from mailserver.interfaces.store import IAccount, IMailbox, IMailStore, IMessage

__all__ = [
    "IAccount",
    "IDelivery",
    "IDeliveryTarget",
    "IFolderChoice",
    "IJunkFeedback",
    "IMailStore",
    "IMailbox",
    "IMessage",
    "ISpool",
    "IUserDirectory",
]
