"""Users, domains and aliases: the directory every protocol's realm consults."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Interface

if TYPE_CHECKING:
    from collections.abc import Iterable

    from twisted.internet.defer import Deferred

    from mailserver.types import Alias, Domain, Role, User


class IUserDirectory(Interface):
    """Who has mail here and where mail for an address goes.

    Addresses are compared with the domain case-folded and the local part as given (RFC 5321
    §2.4), except that look-ups fall back to a lower-cased local part. Password hashing and
    checking run off the reactor thread; methods that do so return Deferreds.
    """

    def add_domain(name: str) -> Deferred[Domain]:
        """Serve ``name``. Deferred[Domain]; AlreadyExists if served already."""

    def remove_domain(name: str) -> Deferred[None]:
        """Stop serving ``name``. Deferred; refused (MailError) while users or aliases
        remain in it; NoSuchDomain if unknown."""

    def domains() -> list[Domain]:
        """Every Domain, sorted by name."""

    def has_domain(name: str) -> bool:
        """True when mail for ``name`` is accepted here."""

    def add_user(
        address: str, password: str, roles: Iterable[Role] | None = None
    ) -> Deferred[User]:
        """Create a user in a served domain with a bcrypt hash of ``password``. Deferred[User];
        NoSuchDomain, AlreadyExists or InvalidName on failure."""

    def set_password(address: str, password: str) -> Deferred[None]:
        """Replace the user's password hash. Deferred; NoSuchUser."""

    def set_roles(
        address: str, roles: Iterable[Role], admin_domains: Iterable[str] = ()
    ) -> Deferred[User]:
        """Replace the user's roles (and, for a domain admin, the served domains they
        administer). Deferred[User]; NoSuchUser, NoSuchDomain or InvalidName."""

    def set_quota(address: str, quota_bytes: int) -> Deferred[User]:
        """Set the user's own quota in bytes (RFC 9208 STORAGE): a positive limit, 0 for the
        configured default, a negative number for none. Deferred[User]; NoSuchUser."""

    def set_pop3_leave_on_server(address: str, leave: bool | None) -> Deferred[User]:
        """Set the user's POP3 "leave mail on the server" choice: True keeps what a POP3
        client deletes, False deletes it, None follows the [pop3] default. Deferred[User];
        NoSuchUser."""

    def remove_user(address: str) -> Deferred[None]:
        """Delete the user. Deferred; NoSuchUser."""

    def get_user(address: str) -> User | None:
        """The User, or None."""

    def users(domain: str | None = None) -> list[User]:
        """Every User (of ``domain`` when given), sorted by address."""

    def check_password(address: str, password: str) -> Deferred[bool]:
        """Deferred[bool]: whether ``password`` matches. Takes about as long for an unknown
        user as for a wrong password, so replies do not reveal who exists."""

    def add_alias(source: str, targets: Iterable[str]) -> Deferred[Alias]:
        """Forward ``source`` (``local@domain`` or catch-all ``@domain``) to ``targets``.
        Deferred[Alias]; the source domain must be served."""

    def remove_alias(source: str) -> Deferred[None]:
        """Delete an alias. Deferred; MailError if unknown."""

    def aliases(domain: str | None = None) -> list[Alias]:
        """Every Alias (of ``domain`` when given), sorted by source."""

    def resolve(address: str) -> list[str]:
        """The local accounts that mail to ``address`` reaches: a user itself, ``user+tag``
        subaddresses, aliases (expanded recursively, loops cut, remote targets kept as given),
        then a catch-all. An empty list means nobody here."""
