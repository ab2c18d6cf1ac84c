"""schemathesis against a live server: the served OpenAPI document tells the truth.

A real `circlet serve` with a project backed by a real repository and a few finished builds.
schemathesis reads the served /api/openapi.json and sends generated requests, valid and
invalid (its examples, coverage, fuzzing and stateful phases), with a valid user token in
`Circle-Token`. Checks: no answer is a 5xx (`not_a_server_error`), every status code and
content type is documented, every body matches its documented schema.

Bounded for CI: a few examples per operation, one worker, deterministic generation (the same
cases on every run), no example database. Half of the generated path parameters name the
real project, its builds and its logs (schemathesis dictionaries), so that cases get past
`Project not found` to the handlers.

Why the CLI (`python -m schemathesis.cli run`) and not `schemathesis.pytest.from_fixture`:
with pytest 9 the lazy-fixture integration of schemathesis 4 fails before running anything
(`'Function' object has no attribute '_nodeid'`), and the schema only exists once the
server runs. The CLI is schemathesis's main interface and runs every phase.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circlet.harness import ServerProcess, config_yaml, git, make_repo

pytestmark = pytest.mark.timeout(120)

P = "/api/v1.1/project/gh/acme/widget"
MAX_EXAMPLES = 20
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)

# schemathesis.toml; TOKEN and SHA are replaced by the live server's user token and the
# repository's commit. Dictionaries also feed trigger bodies a real revision, tag and job.
CONFIG = """
workers = 1
headers = { "Circle-Token" = "TOKEN" }

[generation]
max-examples = MAX_EXAMPLES
deterministic = true
database = "none"

[phases.stateful]
max-steps = 5

[dictionaries]
vcs = { values = ["gh", "github", "GitHub"] }
owner = { values = ["acme", "ACME"] }
repo = { values = ["widget", "Widget"] }
build = { values = [1, 2, 3] }
branch = { values = ["main", "feature/x"] }
step = { values = [0, 99, 101] }
index = { values = [0] }
revision = { values = ["SHA"] }
tag = { values = ["v1"] }
job = { values = ["build"] }

[parameters]
"path.vcs_type" = { dictionary = "vcs", probability = 0.8 }
"path.username" = { dictionary = "owner", probability = 0.8 }
"path.reponame" = { dictionary = "repo", probability = 0.8 }
"path.build_num" = { dictionary = "build", probability = 0.7 }
"path.branch" = { dictionary = "branch", probability = 0.5 }
"path.step" = { dictionary = "step", probability = 0.5 }
"path.index" = { dictionary = "index", probability = 0.5 }
"body.revision" = { dictionary = "revision", probability = 0.5 }
"body.tag" = { dictionary = "tag", probability = 0.5 }
"body.job" = { dictionary = "job", probability = 0.7 }
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("openapi")
    repo = root / "widget"
    make_repo(
        repo,
        {
            ".circleci/config.yml": config_yaml(
                [{"run": {"name": "hello", "command": "echo hello; echo oops >&2"}}]
            )
        },
    )
    git(repo, "tag", "v1")
    srv = ServerProcess(root / "data", slots=2)
    with srv:
        srv.cli("project", "add", "gh/acme/widget", "--repo", str(repo))
        srv.make_token()
        for _ in range(3):
            status, body = srv.request("POST", P + "/tree/main", {"build_parameters": {"X": "1"}})
            assert status == 201, body
            srv.wait_finished("gh/acme/widget", body["build_num"])
        yield srv


def _served_document(live: ServerProcess) -> Any:
    with urllib.request.urlopen(live.base + "/api/openapi.json") as resp:
        return json.loads(resp.read())


def test_schemathesis_finds_no_server_error_and_no_lie(live: ServerProcess, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    sha = live.request("GET", P + "/1")[1]["vcs_revision"]
    text = CONFIG.replace("TOKEN", live.token).replace("SHA", sha)
    config.write_text(text.replace("MAX_EXAMPLES", str(MAX_EXAMPLES)))
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "--no-color",
            "run",
            live.base + "/api/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--report",
            "junit",
            "--report-junit-path",
            str(tmp_path / "junit.xml"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
        check=False,
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    server_log = (live.data_dir / "server.log").read_text()
    assert done.returncode == 0, output[-12000:] + "\n--- server log ---\n" + server_log[-6000:]
    assert "event=unhandled_error" not in server_log, server_log[-6000:]
    operations = sum(len(ops) for ops in _served_document(live)["paths"].values())
    assert f"{operations} selected / {operations} total" in output, output[:3000]
    assert "Test cases:" in output and took < 80, (took, output[-3000:])


def test_the_document_has_no_422_and_every_error_is_a_message(live: ServerProcess) -> None:
    doc = _served_document(live)
    assert doc["openapi"].startswith("3.1")
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            assert "422" not in operation["responses"], label
            for code, answer in operation["responses"].items():
                if code.startswith("4"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Message"}, label


def test_the_document_describes_the_build_endpoints(live: ServerProcess) -> None:
    doc = _served_document(live)
    paths = doc["paths"]
    p = "/api/v1.1/project/{vcs_type}/{username}/{reponame}"
    trigger = paths[p]["post"]["responses"]
    assert set(trigger) == {"201", "400", "403", "404"}
    assert "Location" in trigger["201"]["headers"]
    assert set(paths[p + "/tree/{branch}"]["post"]["responses"]) == {"201", "400", "403", "404"}
    listing = paths[p]["get"]
    assert {q["name"] for q in listing["parameters"] if q["in"] == "query"} == {
        "limit",
        "offset",
        "filter",
        "shallow",
    }
    path_params = {q["name"]: q for q in listing["parameters"] if q["in"] == "path"}
    assert path_params["vcs_type"]["schema"]["enum"] == ["github", "gh", "bitbucket", "bb"]
    single = paths[p + "/{build_num}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert single["schema"] == {"$ref": "#/components/schemas/Build"}
    schemas = doc["components"]["schemas"]
    summary = schemas["BuildSummary"]["properties"]
    # null exactly where api-v1.1.md 5.1 allows it
    assert summary["branch"]["type"] == ["string", "null"]
    assert summary["vcs_revision"] == {"type": "string"}
    assert summary["failed"] == {"enum": [True, None]}
    assert summary["outcome"]["enum"][-1] is None and summary["lifecycle"].get("type") is None
    assert set(schemas["ShallowBuild"]["required"]) == set(schemas["ShallowBuild"]["properties"])
    assert "fleet" in schemas["ShallowBuild"]["required"]
    assert schemas["ProjectBuildCreated"]["properties"] == {
        "status": {"const": 200},
        "body": {"const": "Build created"},
    }
    for name in ("Me", "TestResults", "Artifacts", "Log", "Action", "Message"):
        assert name in schemas, name
    assert {"CircleToken", "BasicToken", "TokenQuery"} <= set(doc["components"]["securitySchemes"])
