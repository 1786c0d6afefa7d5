"""SASL responses of SMTP AUTH (``mailserver.smtp.sasl``): base64 lines, PLAIN, LOGIN and
OAUTHBEARER (RFC 7628).

Documented outcome: bytes or credentials, or ``SASLError`` (``Cancelled`` for ``*``).
"""

from __future__ import annotations

import base64

from bench.fuzz.harness import Target
from mailserver.smtp import sasl

SEEDS = (
    b"AGFsaWNlAHNlY3JldA==",
    b"=",
    b"*",
    base64.b64encode(b"admin\x00alice\x00secret"),
    b"YWxpY2U=\r\nc2VjcmV0",
    base64.b64encode(b"n,a=alice@example.org,\x01auth=Bearer abc.def\x01\x01"),
)


def one_input(data: bytes) -> None:
    lines = data.split(b"\r\n")
    exchanges = (sasl.PlainExchange(), sasl.LoginExchange(), sasl.OAuthBearerExchange())
    for exchange in exchanges:
        try:
            result = exchange.step(None)
            for line in lines:
                if not isinstance(result, bytes):
                    break
                result = exchange.step(sasl.decode(line))
        except sasl.SASLError:
            continue
    for raw in (sasl.PlainExchange(), sasl.OAuthBearerExchange()):  # decoded responses
        try:
            raw.step(None)
            raw.step(data)
        except sasl.SASLError:
            pass


TARGET = Target("smtp_sasl", one_input, SEEDS)
