"""What the credential and checker tests share: a fake clock at a realistic "now".

Design rule: the clock is a twisted Clock, advanced by hand (no real time in these tests).
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

#: A realistic "now" (2023-11-14), on a TOTP step boundary plus a little.
T0 = 1_700_000_010.0


@pytest.fixture
def clock() -> Clock:
    """A Clock at :data:`T0`."""
    c = Clock()
    c.advance(T0)
    return c
