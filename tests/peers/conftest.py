"""Fixtures for the peer-MTA tests: a private Postfix factory and the real server harness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import server_process  # noqa: F401  (re-exported fixture)
from tests.peers.postfix import PostfixInstance, PostfixUnavailable, unavailable_reason


@pytest.fixture
def postfix_peer(tmp_path: Path) -> Iterator[Any]:
    """A factory ``(**PostfixInstance kwargs) -> PostfixInstance`` (not started); every
    instance made is stopped and removed at teardown. Skips when Postfix cannot run here."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    made: list[PostfixInstance] = []

    def make(**kwargs: Any) -> PostfixInstance:
        try:
            instance = PostfixInstance(tmp_path, **kwargs)
        except PostfixUnavailable as error:
            pytest.skip(str(error))
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.stop()
