"""The REST API under ``/api/v1`` (issue #10): JSON over HTTP(S), served by twisted.web.

:mod:`.routing` holds the contract endpoint modules code against (Route, Call, Response,
Problem); :mod:`.context` the :class:`ApiContext` that carries every concrete part (the
protocol layer imports no implementation); :mod:`.app` the resource that dispatches;
:mod:`.openapi` the document it serves; :mod:`.auth_routes` log-in, tokens and the signed-in
user's credentials. Mount it with :func:`api_resource`.
"""

from mailserver.web.api.app import ApiResource, api_resource, collect_routes
from mailserver.web.api.context import ApiContext
from mailserver.web.api.routing import Call, Problem, Response, Route

__all__ = [
    "ApiContext",
    "ApiResource",
    "Call",
    "Problem",
    "Response",
    "Route",
    "api_resource",
    "collect_routes",
]
