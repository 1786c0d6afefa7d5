"""Observability: the structured events the servers emit (:mod:`.events`, a leaf the protocol
packages may import), and, at wiring level, what is made of them: Prometheus metrics
(:mod:`.metrics`, served by :mod:`.http`), the one-line-per-message mail log (:mod:`.maillog`)
and their installation into a running server (:mod:`.wiring`).

This ``__init__`` imports nothing, so importing :mod:`.events` never pulls in
``prometheus_client``.
"""
