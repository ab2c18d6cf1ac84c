"""Notification webhooks: `notify_webhooks` (config), and the Notifier on the service's fakes with
a real receiver (an `http.server` thread on 127.0.0.1) answering what each test needs.

Tests assert on the deliveries left in the store and on what the receiver got.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from textwrap import dedent
from typing import Any

import pytest

from circlet import __version__
from circlet.core.config import load_config, notify_webhooks
from circlet.core.model import Action, ActionStatus, Build, Lifecycle, Outcome, Project
from circlet.core.projects import Delivery, DeliveryState, Webhook
from circlet.harness import free_port
from circlet.notify import Notifier
from circlet.service import Circlet
from circlet.testing import (
    FakeSourceHost,
    InMemoryBuildStore,
    InMemoryDeliveryStore,
    InMemoryLogStore,
    InMemoryProjectSettingsStore,
    RecordingDispatcher,
)
from circlet.wire import Links, build_details

pytestmark = pytest.mark.timeout(60)

SECRET = bytes.fromhex("5e" * 32)
BASE_URL = "https://ci.example.com"
REPO = "https://git.example/acme/widget.git"
FAST = (0.05, 0.05, 0.05)  # three retries, 50 ms apart


def config_text(*urls: str, notify: str | None = None) -> str:
    hooks = "".join(f"\n    - url: {url}" for url in urls)
    section = notify if notify is not None else (f"notify:\n  webhooks:{hooks}\n" if urls else "")
    return (
        dedent(
            """\
            version: 2
            jobs:
              build:
                docker:
                  - image: cimg/base:2024.01
                steps:
                  - run: make test
            """
        )
        + section
    )


# ------------------------------------------------------------------ notify_webhooks (pure)


@pytest.mark.parametrize(
    ("notify", "urls"),
    [
        pytest.param(
            "notify:\n  webhooks:\n    - url: https://a.example/hook\n    - url: http://b.example:8080/x?k=1\n",
            ["https://a.example/hook", "http://b.example:8080/x?k=1"],
            id="two-urls-in-order",
        ),
        pytest.param("", [], id="no-notify"),
        pytest.param("notify: yes\n", [], id="notify-not-a-mapping"),
        pytest.param("notify:\n  webhooks: https://a.example/\n", [], id="webhooks-not-a-list"),
        pytest.param("notify:\n  slack: {}\n", [], id="no-webhooks-key"),
        pytest.param(
            "notify:\n  webhooks:\n    - https://bare.example/\n    - url: https://ok.example/\n",
            ["https://ok.example/"],
            id="bare-string-entry-skipped",
        ),
        pytest.param(
            "notify:\n  webhooks:\n    - url: 42\n    - url:\n    - {}\n    - url: [https://x.example/]\n",
            [],
            id="url-not-a-string",
        ),
        pytest.param(
            "notify:\n  webhooks:\n    - url: ftp://a.example/\n    - url: file:///etc/passwd\n"
            "    - url: /relative\n    - url: https://\n    - url: 'http://[::1'\n",
            [],
            id="not-absolute-http",
        ),
        pytest.param(
            "notify:\n  webhooks:\n    - url: '  HTTPS://a.example/h  '\n    - url: HTTPS://a.example/h\n",
            ["HTTPS://a.example/h"],
            id="trimmed-and-each-once",
        ),
    ],
)
def test_notify_webhooks(notify: str, urls: list[str]) -> None:
    assert notify_webhooks(load_config(config_text(notify=notify))) == urls


# ------------------------------------------------------------------ a receiver


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """An HTTP server on 127.0.0.1 answering POSTs with `answers` in turn (the last one repeats),
    after `delay` seconds; keeps every request."""

    def __init__(self, answers: list[int], *, delay: float = 0.0) -> None:
        self.answers = list(answers)
        self.delay = delay
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(Received(dict(self.headers.items()), body, time.monotonic()))
                    status = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                time.sleep(receiver.delay)
                with contextlib.suppress(OSError):  # the sender gave up waiting
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # type: ignore[attr-defined]  # a slow answer may still sleep
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(secret: bytes, received: Received) -> bool:
    """What a receiver does (docs/webhooks.md)."""
    expected = "sha256=" + hmac.new(secret, received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.headers.get("X-Circlet-Signature", ""), expected)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ------------------------------------------------------------------ the service with a notifier


@dataclass
class Env:
    svc: Circlet
    store: InMemoryBuildStore
    deliveries: InMemoryDeliveryStore
    source: FakeSourceHost
    project: Project
    links: Links
    settings: InMemoryProjectSettingsStore
    receivers: list[Receiver] = field(default_factory=list)

    def receiver(self, answers: list[int], *, delay: float = 0.0) -> Receiver:
        made = Receiver(answers, delay=delay)
        self.receivers.append(made)
        return made

    def hook(self, url: str) -> None:
        """A webhook in the project's settings."""
        self.settings.add_webhook(Webhook(project_id=self.project.id or 0, url=url))

    def trigger(self, config: str) -> Build:
        self.source.add_commit(REPO, files={".circleci/config.yml": config}, message="cfg")
        return self.svc.trigger(self.project)

    def of(self, build: Build) -> list[Delivery]:
        """The build's deliveries, oldest first."""
        return list(reversed(self.deliveries.list_deliveries(build_id=build.id)))

    def settle(self, build: Build, count: int = 1) -> list[Delivery]:
        """Wait until the build has `count` deliveries, none pending; return them."""

        def settled() -> bool:
            found = self.of(build)
            return len(found) == count and all(d.state is not DeliveryState.PENDING for d in found)

        wait_for(settled, f"{count} settled deliveries of build {build.build_num}")
        return self.of(build)


def make_notifier(deliveries: InMemoryDeliveryStore, schedule: tuple[float, ...] = FAST) -> Notifier:
    return Notifier(
        deliveries=deliveries,
        links=Links(BASE_URL, SECRET),
        secret=SECRET,
        schedule=schedule,
        poll_interval=0.01,
    )


def make_service(
    store: InMemoryBuildStore,
    source: FakeSourceHost,
    notifier: Notifier | None,
    settings: InMemoryProjectSettingsStore,
) -> Circlet:
    return Circlet(
        store=store,
        logs=InMemoryLogStore(),
        source=source,
        dispatcher=RecordingDispatcher(),
        base_url=BASE_URL,
        settings=settings,
        notifier=notifier,
    )


@pytest.fixture
def env() -> Iterator[Env]:
    source = FakeSourceHost()
    source.add_commit(REPO, files={"README.md": "hi\n"}, message="First")
    store = InMemoryBuildStore()
    deliveries = InMemoryDeliveryStore(store)
    settings = InMemoryProjectSettingsStore()
    svc = make_service(store, source, make_notifier(deliveries), settings)
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=REPO)
    made = Env(
        svc=svc,
        store=store,
        deliveries=deliveries,
        source=source,
        project=project,
        links=Links(BASE_URL, SECRET),
        settings=settings,
    )
    svc.start()
    yield made
    svc.stop()
    for receiver in made.receivers:
        receiver.close()


def run(svc: Circlet, build: Build, outcome: Outcome = Outcome.SUCCESS) -> float:
    """Report the build run with one step that prints; returns the seconds build_finished took."""
    build_id = build.id or 0
    now = datetime.now(UTC)
    svc.build_queued(build_id, now)
    assert svc.build_started(build_id, now, "w1")
    step = Action(step=101, name="make test", status=ActionStatus.RUNNING, start_time=now, has_output=True)
    svc.action_started(build_id, step)
    writer = svc.log_writer(build_id, 101, 0)
    writer.write(b"ok\n", now)
    writer.close()
    svc.action_finished(build_id, replace(step, status=ActionStatus.SUCCESS, exit_code=0, end_time=now))
    started = time.perf_counter()
    svc.build_finished(build_id, outcome, now)
    return time.perf_counter() - started


def unsigned(data: Any) -> Any:
    """The build JSON without output_url signatures (their expiry moves on the hour)."""
    text = json.dumps(data)
    for step in data.get("steps", []):
        for action in step["actions"]:
            if "output_url" in action:
                text = text.replace(action["output_url"], action["output_url"].split("?")[0])
    return json.loads(text)


# ------------------------------------------------------------------ delivering


def test_retried_until_2xx_then_delivered_signed_with_the_full_build(env: Env) -> None:
    receiver = env.receiver([500, 500, 200])
    build = env.trigger(config_text(receiver.url))
    run(env.svc, build)

    (delivery,) = env.settle(build)
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == (
        DeliveryState.DELIVERED,
        3,
        200,
        None,
    )
    assert delivery.source == "config" and delivery.url == receiver.url
    assert delivery.finished_at is not None and delivery.next_attempt_at is None
    assert receiver.count() == 3
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert all(gap >= 0.04 for gap in gaps), gaps  # the schedule's delays
    finished = env.store.get_build_by_id(build.id or 0)
    assert finished is not None
    expected = build_details(env.svc.view(env.project, finished), env.links)
    for received in receiver.requests:
        assert verify(SECRET, received)
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["User-Agent"] == f"circlet/{__version__}"
        assert received.headers["X-Circlet-Delivery"] == str(delivery.id)
        assert received.headers["X-Circlet-Event"] == "build-finished"
        payload = json.loads(received.body)["payload"]
        assert unsigned(payload) == unsigned(expected)
    payload = json.loads(receiver.requests[-1].body)["payload"]
    assert (payload["build_num"], payload["status"], payload["lifecycle"]) == (1, "success", "finished")
    assert payload["steps"][0]["actions"][0]["output_url"].startswith(
        f"{BASE_URL}/api/v1.1/project/github/acme/widget/1/output/101/0?"
    )
    assert not verify(b"another secret", receiver.requests[0])


def test_a_receiver_that_never_answers_2xx_fails_after_the_schedule(env: Env) -> None:
    receiver = env.receiver([503])
    build = env.trigger(config_text(receiver.url))
    run(env.svc, build, Outcome.FAILED)

    (delivery,) = env.settle(build)
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == (
        DeliveryState.FAILED,
        len(FAST) + 1,
        503,
        "HTTP 503",
    )
    assert delivery.finished_at is not None
    time.sleep(0.2)
    assert receiver.count() == len(FAST) + 1  # not forever
    assert json.loads(receiver.requests[0].body)["payload"]["status"] == "failed"


def test_an_unreachable_receiver_is_retried_then_failed(env: Env) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    build = env.trigger(config_text(url))
    run(env.svc, build)

    (delivery,) = env.settle(build)
    assert delivery.state is DeliveryState.FAILED
    assert delivery.attempts == len(FAST) + 1
    assert delivery.last_status is None
    assert delivery.last_error is not None and "Connect" in delivery.last_error


def test_one_post_per_url_config_first_then_the_projects_settings(env: Env) -> None:
    a, b = env.receiver([200]), env.receiver([204])
    env.hook(a.url)
    env.hook(b.url)
    build = env.trigger(config_text(a.url))
    run(env.svc, build)

    first, second = env.settle(build, 2)
    assert [(first.url, first.source), (second.url, second.source)] == [(a.url, "config"), (b.url, "project")]
    assert first.state is second.state is DeliveryState.DELIVERED and second.last_status == 204
    env.svc.build_finished(build.id or 0, Outcome.SUCCESS, datetime.now(UTC))  # a late duplicate report
    time.sleep(0.1)
    assert len(env.of(build)) == 2
    assert (a.count(), b.count()) == (1, 1)


def test_a_build_that_cannot_run_notifies_too_but_one_canceled_before_it_started_does_not(env: Env) -> None:
    receiver = env.receiver([200])
    env.hook(receiver.url)
    broken = env.trigger("version: 2\njobs:\n  build:\n    steps: []\n")  # no executor
    assert broken.lifecycle is Lifecycle.FINISHED and broken.outcome is Outcome.FAILED
    (delivery,) = env.settle(broken)
    assert delivery.state is DeliveryState.DELIVERED
    assert json.loads(receiver.requests[0].body)["payload"]["build_num"] == broken.build_num

    waiting = env.trigger(config_text())
    env.svc.cancel(env.project, waiting.build_num)
    env.svc.build_finished(waiting.id or 0, Outcome.CANCELED, datetime.now(UTC))
    time.sleep(0.1)
    assert env.of(waiting) == []


@pytest.mark.parametrize(
    "notify",
    [
        pytest.param("notify: [1, 2]\n", id="notify-a-list"),
        pytest.param("notify:\n  webhooks:\n    - url: {a: b}\n    - ftp://x\n", id="bad-entries"),
        pytest.param("notify:\n  webhooks:\n    - url: gopher://old.example/\n", id="not-http"),
    ],
)
def test_a_notify_problem_never_fails_a_build(env: Env, notify: str) -> None:
    build = env.trigger(config_text(notify=notify))
    run(env.svc, build)
    finished = env.store.get_build_by_id(build.id or 0)
    assert finished is not None and finished.outcome is Outcome.SUCCESS
    assert finished.messages == ()
    assert env.of(build) == []


def test_a_broken_notifier_is_logged_never_raised_into_the_build(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(delivery: Delivery) -> Delivery:
        raise OSError("disk full")

    monkeypatch.setattr(env.deliveries, "add_delivery", refuse)
    build = env.trigger(config_text("https://hooks.example/x"))
    with caplog.at_level(logging.ERROR, logger="circlet.service"):
        run(env.svc, build)
    finished = env.store.get_build_by_id(build.id or 0)
    assert finished is not None and finished.lifecycle is Lifecycle.FINISHED
    assert finished.outcome is Outcome.SUCCESS
    assert any(f"event=notify_error build_id={build.id}" in r.getMessage() for r in caplog.records)


def test_a_slow_receiver_does_not_delay_build_finished(env: Env) -> None:
    receiver = env.receiver([200], delay=3.0)
    first = env.trigger(config_text(receiver.url))
    second = env.trigger(config_text(receiver.url))
    assert run(env.svc, first) < 0.05
    wait_for(lambda: receiver.count() == 1, "the first POST")  # the sender now waits on the receiver
    assert run(env.svc, second) < 0.05
    assert [d.state for d in env.of(second)] == [DeliveryState.PENDING]
    (done,) = env.settle(first)
    assert done.state is DeliveryState.DELIVERED


def test_a_restart_sends_what_the_previous_process_left_pending(env: Env) -> None:
    env.svc.stop()  # the fixture's server: gone
    receiver = env.receiver([200])
    env.hook(receiver.url)
    old = make_service(env.store, env.source, make_notifier(env.deliveries), env.settings)
    fresh = env.trigger(config_text())
    retrying = env.trigger(config_text())
    run(old, fresh)  # finished while the old process stopped sending: never attempted
    run(old, retrying)
    (left,) = env.of(retrying)
    env.deliveries.save_delivery(  # attempted twice already, next attempt due
        replace(left, attempts=2, last_status=502, next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    assert [d.state for d in env.deliveries.list_deliveries()] == [DeliveryState.PENDING] * 2
    assert receiver.count() == 0
    old.journal.close()

    new = make_service(env.store, env.source, make_notifier(env.deliveries), env.settings)
    new.start()
    try:
        (a,) = env.settle(fresh)
        (b,) = env.settle(retrying)
    finally:
        new.stop()
    assert (a.state, a.attempts) == (DeliveryState.DELIVERED, 1)
    assert (b.state, b.attempts, b.last_status) == (DeliveryState.DELIVERED, 3, 200)
    assert receiver.count() == 2


def test_without_a_notifier_nothing_is_recorded() -> None:
    source = FakeSourceHost()
    source.add_commit(REPO, files={".circleci/config.yml": config_text("https://hooks.example/")})
    store = InMemoryBuildStore()
    settings = InMemoryProjectSettingsStore()
    svc = make_service(store, source, None, settings)
    project = svc.add_project(vcs_type="gh", username="acme", reponame="widget", repo_url=REPO)
    settings.add_webhook(Webhook(project_id=project.id or 0, url="https://hooks.example/p"))
    build = svc.trigger(project)
    run(svc, build)
    svc.stop()
    assert svc.list_deliveries() == []
