"""GET /api/v1.1/admin/metrics on a real server: Prometheus text an administrator's scrape reads,
counting a real build (docs/metrics.md)."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from circlet.harness import ServerProcess, commit_files, config_yaml

pytestmark = pytest.mark.timeout(120)

SLUG = "gh/acme/widget"


def scrape(server: ServerProcess, token: str | None) -> tuple[int, str, str]:
    req = urllib.request.Request(server.base + "/api/v1.1/admin/metrics")
    if token:  # as Prometheus's `basic_auth: {username: TOKEN}` sends it
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{token}:".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_an_administrator_scrapes_build_metrics(server: ServerProcess, repo: Path) -> None:
    commit_files(repo, {".circleci/config.yml": config_yaml([{"run": "true"}])}, message="config")
    status, build = server.request("POST", f"/api/v1.1/project/{SLUG}/tree/main")
    assert status == 201, build
    assert server.wait_finished(SLUG, build["build_num"])["outcome"] == "success"

    status, kind, text = scrape(server, server.token)

    assert status == 200 and kind.startswith("text/plain; version=0.0.4")
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("circlet_builds_finished_total", (("outcome", "success"),))] == 1
    assert values[("circlet_builds", (("lifecycle", "running"),))] == 0
    assert values[("circlet_build_duration_seconds_count", (("outcome", "success"),))] == 1
    assert values[("process_resident_memory_bytes", ())] > 0
    assert not [name for name, _ in values if name.startswith("circlet_worker")]  # local executor


def test_metrics_need_an_administrator(server: ServerProcess) -> None:
    status, _, body = scrape(server, None)
    assert status == 401 and "You must log in first." in body
