"""End to end: a real `circlet serve` notifies a real receiver when a build finishes.

The receiver is an `http.server` thread on loopback named in the config's `notify.webhooks`; it
checks the signature as docs/webhooks.md tells receivers to, with the server's secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from circlet import __version__
from circlet.harness import ServerProcess, config_yaml, make_repo

pytestmark = pytest.mark.timeout(120)

SLUG = "gh/acme/widget"
P = f"/api/v1.1/project/{SLUG}"
ADMIN = "/api/v1.1/admin/webhook-deliveries"


class Receiver:
    """Answers 200 to every POST and keeps (headers, body) of each."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def server(tmp_path: Path, receiver: Receiver) -> Iterator[ServerProcess]:
    repo = tmp_path / "widget"
    config = config_yaml(["checkout", {"run": {"name": "Greet", "command": "echo hello"}}])
    config += f"notify:\n  webhooks:\n    - url: {receiver.url}\n    - url: not-a-url\n"
    make_repo(repo, {".circleci/config.yml": config, "README": "widget\n"})
    srv = ServerProcess(tmp_path / "data", slots=1)
    with srv:
        srv.cli("project", "add", SLUG, "--repo", str(repo))
        srv.make_token()
        yield srv


def wait_for(what: str, probe: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def unsigned_steps(build: dict[str, Any]) -> list[Any]:
    """Steps with output_url's expiry and signature cut off (they move on the hour)."""
    steps = json.loads(json.dumps(build["steps"]))
    for step in steps:
        for action in step["actions"]:
            if "output_url" in action:
                action["output_url"] = action["output_url"].split("?")[0]
    return steps


def test_a_finished_build_is_posted_once_signed_and_listed_for_admins(
    server: ServerProcess, receiver: Receiver
) -> None:
    status, summary = server.request("POST", f"{P}/tree/main")
    assert status == 201, summary
    build = server.wait_finished(SLUG, summary["build_num"])
    assert build["status"] == "success"

    wait_for("the webhook", receiver.received)
    time.sleep(1.0)  # nothing more comes
    ((headers, body),) = receiver.received()

    secret = bytes.fromhex((server.data_dir / "secret.key").read_text().strip())
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Circlet-Signature"], expected)
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"circlet/{__version__}"
    assert headers["X-Circlet-Event"] == "build-finished"

    payload = json.loads(body)["payload"]
    _, shown = server.request("GET", f"{P}/{build['build_num']}")
    assert payload["build_num"] == shown["build_num"] == 1
    assert payload["status"] == shown["status"] == "success"
    assert payload["lifecycle"] == "finished"
    assert [s["name"] for s in payload["steps"]] == ["Spin up Environment", "Checkout code", "Greet"]
    assert unsigned_steps(payload) == unsigned_steps(shown)
    assert payload["steps"][2]["actions"][0]["output_url"].startswith(
        f"{server.base}/api/v1.1/project/github/acme/widget/1/output/102/0?"
    )
    assert set(payload) == set(shown)

    def delivered() -> list[Any]:
        status, rows = server.request("GET", ADMIN)
        assert status == 200, rows
        return rows if rows and rows[0]["state"] == "delivered" else []

    (row,) = wait_for("the delivery to be recorded", delivered)
    assert row["id"] == int(headers["X-Circlet-Delivery"])
    assert (row["project"], row["build_num"], row["url"], row["source"]) == (SLUG, 1, receiver.url, "config")
    assert (row["attempts"], row["last_status"], row["last_error"]) == (1, 200, None)
    assert row["finished_at"] is not None

    status, rows = server.request("GET", f"{ADMIN}?project={SLUG}&build_num=1")
    assert status == 200 and [r["id"] for r in rows] == [row["id"]]
    server.token = ""
    assert server.request("GET", ADMIN) == (401, {"message": "You must log in first."})

    listed = server.cli("deliveries", "--limit", "5").stdout
    assert f"{row['id']}\tdelivered\t1\t{SLUG}/1\tconfig\t{receiver.url}" in listed
