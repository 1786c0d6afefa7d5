"""The public API is exactly these names (klein's ``test_exports`` style): each public module's
``__all__`` (or, for the leaf modules of values, its own public names) is pinned here, and each
name resolves to the object in its private home. Every other module path is private.

A failure here means a public name was added, removed or moved: change the API on purpose,
then update PUBLIC (and the embedding guide), never the other way round.
"""

from __future__ import annotations
import __future__

import importlib
import inspect
import types

import pytest
from twisted.internet.protocol import Factory
from zope.interface.interface import InterfaceClass

#: public module -> {public name: the private module that defines it}
PUBLIC: dict[str, dict[str, str]] = {
    "mailserver.smtp": {
        "SMTPFactory": "mailserver.smtp.factory",
        "SMTPPolicy": "mailserver.smtp.factory",
    },
    "mailserver.imap": {
        "IMAPFactory": "mailserver.imap.factory",
        "IMAPPolicy": "mailserver.imap.factory",
        "RecentClaims": "mailserver.imap.factory",
    },
    "mailserver.pop3": {
        "MaildropLocks": "mailserver.pop3.factory",
        "POP3Factory": "mailserver.pop3.factory",
        "POP3Policy": "mailserver.pop3.factory",
    },
    "mailserver.interfaces": {
        "IAccount": "mailserver.interfaces.store",
        "ICheck": "mailserver.interfaces.filter",
        "ICheckSession": "mailserver.interfaces.filter",
        "IClassified": "mailserver.interfaces.delivery",
        "IDelivery": "mailserver.interfaces.delivery",
        "IDeliveryTarget": "mailserver.interfaces.delivery",
        "IFilterSession": "mailserver.interfaces.filter",
        "IFolderChoice": "mailserver.interfaces.delivery",
        "IHeaderIndex": "mailserver.interfaces.header_index",
        "IJunkFeedback": "mailserver.interfaces.filter",
        "IMailStore": "mailserver.interfaces.store",
        "IMailbox": "mailserver.interfaces.store",
        "IMailboxRecords": "mailserver.interfaces.store",
        "IMessage": "mailserver.interfaces.store",
        "ISessionFilter": "mailserver.interfaces.filter",
        "ISpool": "mailserver.interfaces.spool",
        "ITraceLog": "mailserver.interfaces.trace",
        "IUserDirectory": "mailserver.interfaces.auth",
    },
    "mailserver.testing": {
        "BlockingCall": "mailserver.testing.blocking",
        "CapturedMessage": "mailserver.testing.recording",
        "DeliveryTimeout": "mailserver.testing.recording",
        "MailSystem": "mailserver.testing.system",
        "MemoryAccount": "mailserver.testing.memory",
        "MemoryDelivery": "mailserver.testing.memory",
        "MemoryDeliveryTarget": "mailserver.testing.memory",
        "MemoryDirectory": "mailserver.testing.memory",
        "MemoryMailbox": "mailserver.testing.memory",
        "MemoryMessage": "mailserver.testing.memory",
        "MemoryStore": "mailserver.testing.memory",
        "ReactorThread": "mailserver.testing.blocking",
        "RecordingDelivery": "mailserver.testing.recording",
        "RecordingTarget": "mailserver.testing.recording",
        "greenlet_call": "mailserver.testing.blocking",
        "self_signed_tls": "mailserver.testing.system",
    },
    "mailserver.testing_pytest": {
        "mail_system": "mailserver.testing_pytest",
        "make_mail_system": "mailserver.testing_pytest",
    },
}

#: The leaf modules of values that cross the interfaces (no ``__all__``): every public name
#: they define themselves.
VALUES: dict[str, set[str]] = {
    "mailserver.types": {
        "ACCEPT",
        "ANSWERED",
        "Action",
        "Address",
        "Alias",
        "DEFAULT_FOLDERS",
        "DELETED",
        "DELIMITER",
        "DRAFT",
        "Domain",
        "Envelope",
        "FLAGGED",
        "FlagInfo",
        "FlagMode",
        "FolderInfo",
        "MessageInfo",
        "Peer",
        "QueueEntry",
        "QueuedRecipient",
        "QuotaUsage",
        "RecipientState",
        "Role",
        "SEEN",
        "SYSTEM_FLAGS",
        "SpamVerdict",
        "SpecialUse",
        "User",
        "Verdict",
    },
    "mailserver.errors": {
        "AlreadyExists",
        "ConfigError",
        "FolderExists",
        "InvalidName",
        "MailError",
        "MailboxFull",
        "NoSuchDomain",
        "NoSuchFolder",
        "NoSuchMessage",
        "NoSuchUser",
        "QuotaExceeded",
        "RelayDenied",
        "StoreUnavailable",
    },
}

#: Public by reference: MessageInfo's envelope, bodystructure and attachments are documented
#: as this parser's results, so a store of one's own (examples/imap_dict_store) fills them in
#: with it. (The module has other, private, names.)
REFERENCED: dict[str, tuple[str, ...]] = {"mailserver.message.mime": ("ParsedMessage", "parse")}


def own_public_names(module: types.ModuleType) -> set[str]:
    """The names a module defines itself and does not mark private: not imported modules,
    classes or functions, not ``from __future__`` features."""
    found = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType | __future__._Feature):
            continue
        if (inspect.isclass(value) or inspect.isfunction(value)) and (
            value.__module__ != module.__name__
        ):
            continue
        found.add(name)
    return found


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_all_is_exactly_the_public_names(module_name: str) -> None:
    """Each public module's ``__all__`` lists exactly the pinned names, each once."""
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(PUBLIC[module_name])
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize(
    ("module_name", "name", "home"),
    [(module, name, home) for module, names in PUBLIC.items() for name, home in names.items()],
)
def test_each_public_name_resolves_to_its_home(module_name: str, name: str, home: str) -> None:
    """``from <public module> import <name>`` gives the very object its private home
    defines."""
    public = importlib.import_module(module_name)
    private = importlib.import_module(home)
    assert getattr(public, name) is getattr(private, name)


@pytest.mark.parametrize("module_name", sorted(VALUES))
def test_value_modules_define_exactly_the_public_names(module_name: str) -> None:
    """types and errors define exactly the pinned public names (they have no ``__all__``)."""
    module = importlib.import_module(module_name)
    assert own_public_names(module) == VALUES[module_name]


def test_star_import_gives_the_public_names() -> None:
    """``from mailserver.<package> import *`` binds exactly the public names."""
    for module_name, names in PUBLIC.items():
        namespace: dict[str, object] = {}
        exec(f"from {module_name} import *", namespace)
        assert set(namespace) - {"__builtins__"} == set(names)


def test_protocol_factories_and_interfaces_are_what_they_say() -> None:
    """The factories are Twisted protocol factories; mailserver.interfaces holds only
    zope interfaces; the policies are frozen dataclasses an embedder fills in."""
    from mailserver import imap, interfaces, pop3, smtp

    for factory in (smtp.SMTPFactory, imap.IMAPFactory, pop3.POP3Factory):
        assert issubclass(factory, Factory)
    for policy in (smtp.SMTPPolicy, imap.IMAPPolicy, pop3.POP3Policy):
        assert policy.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert policy().hostname == "localhost"
    assert all(isinstance(getattr(interfaces, n), InterfaceClass) for n in interfaces.__all__)


@pytest.mark.parametrize("module_name", ["mailserver.smtp", "mailserver.imap", "mailserver.pop3"])
def test_protocol_packages_say_what_is_public(module_name: str) -> None:
    """Each protocol package's docstring names its public API and says the rest is private."""
    doc = importlib.import_module(module_name).__doc__ or ""
    assert "**Public API**" in doc and "private" in doc


@pytest.mark.parametrize(
    ("module_name", "name"), [(m, n) for m, names in REFERENCED.items() for n in names]
)
def test_referenced_names_exist(module_name: str, name: str) -> None:
    """The names the public documentation refers to resolve; parse() gives the three
    parse results MessageInfo carries."""
    value = getattr(importlib.import_module(module_name), name)
    if name == "parse":
        parsed = value(b"Subject: hi\r\n\r\nbody\r\n")
        assert parsed.envelope["subject"] == "hi"
        assert parsed.bodystructure and parsed.attachments == []
