"""Fixtures of the client matrix (issue 11): the real server with every listener on, alice and
bob of example.org provisioned, plus the Postfix peer factory; and the matrix plugin
(:mod:`tests.clients.matrix`), which writes build/clients/matrix.md from the run's outcomes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from tests.clients import matrix
from tests.e2e.conftest import LISTENERS, ServerProcess, server_process  # noqa: F401
from tests.e2e.mail import provision
from tests.peers.conftest import postfix_peer  # noqa: F401  (re-exported fixture)

DOMAIN = "example.org"


def pytest_configure(config: pytest.Config) -> None:
    matrix.register(config)


@pytest.fixture
def mail_server(server_process: Callable[..., ServerProcess]) -> ServerProcess:  # noqa: F811
    """``twistd mailserver`` on 127.0.0.1 with every listener (SMTP, submission with STARTTLS
    and implicit TLS, IMAP and POP3 both ways, HTTP), serving example.org with the users alice
    and bob (password :data:`tests.e2e.mail.PASSWORD`); started and ready."""
    server = server_process(listen_keys=LISTENERS)
    pytest_twisted.blockon(ensureDeferred(provision(Path(server.data_dir), DOMAIN,
                                                    ("alice", "bob"))))
    return server.start()
