"""Schemathesis against the served OpenAPI document: generated requests, documented replies.

The server runs on the test's reactor; schemathesis (blocking ``requests``) runs in a
thread, so the reactor keeps serving. Each operation gets a bounded number of generated
cases (valid and invalid: wrong types, missing members, odd strings); every reply must be a
documented status with a documented content type and body schema, and never a 5xx.

``AUTH_TAGS`` operations (the API core's) get more examples; all operations, mail and admin
included, run with fewer. (``strict=False`` checks only for server errors: a tool for
looking at an operation that does not conform yet.)
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThreadPool

from mailserver.auth.throttle import ThrottlePolicy

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

ALICE, PW = "alice@example.test", "pw-alice-1"
AUTH_TAGS = {"auth", "meta"}
#: Cases per operation and generation mode (bounded: the whole module takes seconds).
EXAMPLES = 15


def _fuzz(document: dict[str, Any], base_url: str, token: str, tags: set[str] | None,
          strict: bool, examples: int = EXAMPLES) -> None:
    """Run in a thread: raise the first failure (shrunk by hypothesis) of any selected
    operation; ``strict`` checks status, content type and body schema, else only 5xx."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        operation = result.ok()
        if tags is not None and not set(operation.tags or []) & tags:
            continue
        if operation.method.upper() == "POST" and operation.path == "/auth/logout":
            continue  # would revoke the token the other cases use
        if operation.method.upper() == "GET" and operation.path == "/events":
            continue  # a stream that never ends (tests/web/test_events.py covers it)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(base_url=base_url, headers=headers, timeout=10)
                if strict:
                    case.validate_response(response, checks=checks, headers=headers)
                else:  # 503 (a part this server lacks) and 507 (quota) are answers
                    assert response.status_code not in (500, 501, 502, 504), (
                        f"{case.method} {case.formatted_path}: {response.status_code} "
                        f"{response.text[:300]}"
                    )

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise  # only an operation with nothing to get wrong has no negative case


async def _prepare(api: Any) -> tuple[dict[str, Any], str]:
    await api.add_user(ALICE, PW)
    token = await api.login(ALICE, PW)
    document = (await api.call("GET", "/openapi.json")).json
    return document, token


#: No waiting after failed log-ins (bans, answered 429, still happen).
NO_DELAY = ThrottlePolicy(base_delay=0.0, max_delay=0.0)


@pytest_twisted.ensureDeferred
async def test_auth_operations_conform_to_the_document(api_server):
    """Generated requests to the auth and meta operations get documented replies."""
    api = await api_server(throttle_policy=NO_DELAY)
    document, token = await _prepare(api)
    await deferToThreadPool(
        reactor, reactor.getThreadPool(), _fuzz, document, api.url(""), token, AUTH_TAGS, True
    )


@pytest_twisted.ensureDeferred
async def test_every_operation_conforms_to_the_document(api_server):
    """Every operation (mail and admin too, called by a plain user) answers generated
    requests with documented statuses, content types and bodies, and no server error."""
    api = await api_server(throttle_policy=NO_DELAY)
    document, token = await _prepare(api)
    await deferToThreadPool(
        reactor, reactor.getThreadPool(), _fuzz, document, api.url(""), token, None, True, 8
    )
