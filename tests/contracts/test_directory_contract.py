"""The IUserDirectory contract, run against the LMDB directory and the in-memory one."""

from __future__ import annotations

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from mailserver.errors import AlreadyExists, InvalidName, MailError, NoSuchDomain, NoSuchUser
from mailserver.interfaces import IUserDirectory
from mailserver.testing import MemoryDirectory
from mailserver.types import Role


def wait(d):
    return pytest_twisted.blockon(d)


class DirectoryContract:
    @pytest.fixture
    def directory(self, request):
        d = self.make_directory(request)
        wait(d.add_domain("Example.ORG"))
        return d

    def test_provides_interface(self, directory):
        """The directory provides IUserDirectory."""
        assert verifyObject(IUserDirectory, directory)

    @pytest_twisted.ensureDeferred
    async def test_domains(self, directory):
        """Domains are case-insensitive, listed, and removable once empty."""
        assert directory.has_domain("EXAMPLE.org.")
        assert [d.name for d in directory.domains()] == ["example.org"]
        with pytest.raises(AlreadyExists):
            await directory.add_domain("example.org")
        await directory.add_user("a@example.org", "pw")
        with pytest.raises(MailError):
            await directory.remove_domain("example.org")
        await directory.remove_user("a@example.org")
        await directory.remove_domain("example.org")
        assert not directory.has_domain("example.org")
        with pytest.raises(NoSuchDomain):
            await directory.remove_domain("example.org")

    @pytest_twisted.ensureDeferred
    async def test_user_password(self, directory):
        """A user's password checks; a wrong one or an unknown user does not."""
        user = await directory.add_user("Alice@Example.org", "s3cret", [Role.ADMIN])
        assert user.address == "alice@example.org"
        assert user.password_hash.startswith("$2")
        assert await directory.check_password("alice@example.org", "s3cret")
        assert not await directory.check_password("alice@example.org", "nope")
        assert not await directory.check_password("bob@example.org", "s3cret")
        await directory.set_password("ALICE@example.org", "new one")
        assert await directory.check_password("alice@example.org", "new one")
        assert directory.get_user("alice@example.org").roles == frozenset({Role.ADMIN})

    @pytest_twisted.ensureDeferred
    async def test_set_roles(self, directory):
        """Roles are replaced; a domain admin names served domains, and only they do."""
        await directory.add_user("a@example.org", "pw")
        user = await directory.set_roles("A@example.org", [Role.DOMAIN_ADMIN], ["Example.org"])
        assert user.roles == frozenset({Role.DOMAIN_ADMIN})
        stored = directory.get_user("a@example.org")
        assert stored.admin_domains == frozenset({"example.org"})
        assert await directory.check_password("a@example.org", "pw")  # password untouched
        with pytest.raises(InvalidName):
            await directory.set_roles("a@example.org", [Role.DOMAIN_ADMIN])
        with pytest.raises(InvalidName):
            await directory.set_roles("a@example.org", [Role.ADMIN], ["example.org"])
        with pytest.raises(NoSuchDomain):
            await directory.set_roles("a@example.org", [Role.DOMAIN_ADMIN], ["elsewhere.net"])
        with pytest.raises(NoSuchUser):
            await directory.set_roles("b@example.org", [Role.ADMIN])
        await directory.set_roles("a@example.org", [Role.ADMIN])
        stored = directory.get_user("a@example.org")
        assert stored.roles == frozenset({Role.ADMIN}) and not stored.admin_domains

    @pytest_twisted.ensureDeferred
    async def test_pop3_leave_on_server(self, directory):
        """A user's POP3 "leave on server" choice is None until set, then True, False or
        None again; the rest of the record is untouched."""
        await directory.add_user("a@example.org", "pw")
        assert directory.get_user("a@example.org").pop3_leave_on_server is None
        user = await directory.set_pop3_leave_on_server("A@example.org", True)
        assert user.pop3_leave_on_server is True
        assert directory.get_user("a@example.org").pop3_leave_on_server is True
        await directory.set_pop3_leave_on_server("a@example.org", False)
        assert directory.get_user("a@example.org").pop3_leave_on_server is False
        await directory.set_pop3_leave_on_server("a@example.org", None)
        assert directory.get_user("a@example.org").pop3_leave_on_server is None
        assert await directory.check_password("a@example.org", "pw")
        with pytest.raises(NoSuchUser):
            await directory.set_pop3_leave_on_server("b@example.org", True)

    @pytest_twisted.ensureDeferred
    async def test_long_password(self, directory):
        """Pass phrases longer than bcrypt's 72 bytes are checked whole."""
        phrase = "correct horse battery staple " * 5
        await directory.add_user("alice@example.org", phrase)
        assert await directory.check_password("alice@example.org", phrase)
        assert not await directory.check_password("alice@example.org", phrase[:-1] + "X")

    @pytest_twisted.ensureDeferred
    async def test_user_errors(self, directory):
        """Users need a served domain, a valid address, a password, and a unique name."""
        with pytest.raises(NoSuchDomain):
            await directory.add_user("a@elsewhere.net", "pw")
        with pytest.raises(InvalidName):
            await directory.add_user("not an address", "pw")
        with pytest.raises(InvalidName):
            await directory.add_user("a@example.org", "")
        await directory.add_user("a@example.org", "pw")
        with pytest.raises(AlreadyExists):
            await directory.add_user("A@example.org", "pw")
        with pytest.raises(NoSuchUser):
            await directory.remove_user("b@example.org")
        assert [u.address for u in directory.users("example.org")] == ["a@example.org"]

    @pytest_twisted.ensureDeferred
    async def test_resolve(self, directory):
        """Users, subaddresses, aliases (with loops cut), remote targets and catch-alls."""
        await directory.add_user("alice@example.org", "pw")
        await directory.add_user("bob@example.org", "pw")
        await directory.add_alias("team@example.org", ["alice@example.org", "bob@example.org"])
        await directory.add_alias("loop1@example.org", ["loop2@example.org"])
        await directory.add_alias("loop2@example.org", ["loop1@example.org", "bob@example.org"])
        await directory.add_alias("ext@example.org", ["someone@remote.example"])
        assert directory.resolve("alice@example.org") == ["alice@example.org"]
        assert directory.resolve("ALICE+lists@Example.org") == ["alice@example.org"]
        assert directory.resolve("team@example.org") == ["alice@example.org", "bob@example.org"]
        assert directory.resolve("loop1@example.org") == ["bob@example.org"]
        assert directory.resolve("ext@example.org") == ["someone@remote.example"]
        assert directory.resolve("nobody@example.org") == []
        await directory.add_alias("@example.org", ["alice@example.org"])
        assert directory.resolve("nobody@example.org") == ["alice@example.org"]
        assert directory.resolve("bob+x@example.org") == ["bob@example.org"]
        assert [a.source for a in directory.aliases("example.org")][0] == "@example.org"
        await directory.remove_alias("@example.org")
        assert directory.resolve("nobody@example.org") == []

    @pytest_twisted.ensureDeferred
    async def test_alias_errors(self, directory):
        """Aliases need a served source domain, targets, and may not point at themselves."""
        with pytest.raises(NoSuchDomain):
            await directory.add_alias("x@elsewhere.net", ["a@example.org"])
        with pytest.raises(InvalidName):
            await directory.add_alias("x@example.org", [])
        with pytest.raises(InvalidName):
            await directory.add_alias("x@example.org", ["x@example.org"])
        with pytest.raises(MailError):
            await directory.remove_alias("x@example.org")


class TestLmdbDirectory(DirectoryContract):
    def make_directory(self, request):
        return request.getfixturevalue("storage").directory


class TestMemoryDirectory(DirectoryContract):
    def make_directory(self, request):
        return MemoryDirectory()
