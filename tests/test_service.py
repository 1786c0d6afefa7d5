"""mailserver.service.MailService: start-up readiness and the SIGTERM shutdown sequence."""

from __future__ import annotations

import pytest
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from mailserver.config import Config, loads
from mailserver.service import MailService


class Recorder:
    """Fake store and db that record calls into a shared list."""

    def __init__(self, events, name, close_result=None):
        self.events = events
        self.name = name
        self.close_result = close_result
        self.schema_version = 1
        self.env = self  # the db's LMDB environment, for its path

    def path(self):
        return f"{self.name}-path"

    def recover(self):
        self.events.append(f"{self.name}.recover")
        return succeed(0)

    def close(self):
        self.events.append(f"{self.name}.close")
        return self.close_result if self.close_result is not None else succeed(None)


class Listener(Service):
    def __init__(self, events):
        self.events = events

    def stopService(self):
        self.events.append("listener.stop")
        return super().stopService()


@pytest.fixture(autouse=True)
def checks(monkeypatch):
    """The start-up consistency check's calls (store, index path), instead of running it
    on the fakes."""
    calls: list[tuple[object, str]] = []
    monkeypatch.setattr(
        "mailserver.service.verify_at_start", lambda store, path: calls.append((store, path))
    )
    return calls


def make(config: Config, store_close=None):
    events: list[str] = []
    clock = Clock()
    store = Recorder(events, "store", store_close)
    db = Recorder(events, "db")
    service = MailService(config, clock, db=db, store=store, directory=None, tls=None)
    Listener(events).setServiceParent(service)
    return service, clock, events


def test_ready_after_recovery(checks):
    """startService recovers the store and /healthz status turns from starting to ok; the
    consistency check of the recovered store and its index follows."""
    service, _, events = make(Config())
    assert service.status()["status"] == "starting"
    assert checks == []
    service.startService()
    assert events == ["store.recover"]
    assert checks == [(service.store, "db-path")]
    assert service.status() == {
        "status": "ok",
        "version": service.status()["version"],
        "schema_version": 1,
    }


def test_stop_order_listeners_store_db():
    """Shutdown stops the listeners first, then closes the store, then the index."""
    service, _, events = make(Config())
    service.startService()
    finished: list[object] = []
    service.stopService().addBoth(finished.append)
    assert events[1:] == ["listener.stop", "store.close", "db.close"]
    assert finished == [None]
    assert service.stopped_cleanly
    assert service.status()["status"] == "stopping"


def test_in_flight_work_is_cut_off_at_the_timeout():
    """A store that never finishes is given shutdown_timeout seconds, then the index closes
    anyway and the shutdown is marked unclean."""
    hanging: Deferred[None] = Deferred()
    service, clock, events = make(loads("[server]\nshutdown_timeout = 2.5\n"), hanging)
    service.startService()
    finished: list[object] = []
    service.stopService().addBoth(finished.append)
    assert events[-1] == "store.close"
    clock.advance(2.4)
    assert finished == []
    clock.advance(0.2)
    assert events[-1] == "db.close"
    assert finished == [None]
    assert not service.stopped_cleanly
    assert not hanging.called  # the store's own work is left alone, not cancelled
