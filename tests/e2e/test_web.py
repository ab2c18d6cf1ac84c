"""The web page over HTTP on a real `circlet serve`: sessions, CSRF, rights, every build state
(no 5xx for any of them), log windows, the live log stream, a 100 MB log's tail, the workflow
page in every workflow status with its Approve and Cancel workflow forms, and `why` words.

Builds in unusual states are written into the server's own database and log folder by a
second set of services on the same data folder (the server reads builds from the store on
every request); real builds come from a real git repository.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from circlet.bootstrap import App, build_services
from circlet.core.model import (
    Action,
    ActionStatus,
    Build,
    Commit,
    Lifecycle,
    Message,
    Outcome,
    Project,
    Why,
)
from circlet.core.pipeline import Pipeline, Workflow, WorkflowJob
from circlet.core.workflow import JobState, JobType, Requirement, WorkflowStatus
from circlet.harness import ServerProcess, config_yaml, make_repo
from circlet.service import hash_token
from circlet.settings import load_settings

pytestmark = pytest.mark.timeout(180)

COMMIT = Commit(
    sha="0123456789abcdef0123456789abcdef01234567",
    subject="Fix the <b>frobnicator</b>",
    body="",
    author_name="Ada Lovelace",
    author_email="ada@example.com",
    author_date="2024-05-01T10:03:49-07:00",
    committer_name="Ada Lovelace",
    committer_email="ada@example.com",
    committer_date="2024-05-01T10:03:49-07:00",
)
STEPS = [
    {"run": {"name": "Say hello", "command": "printf '\\033[32mhello\\033[0m <world>\\n'"}},
    {"run": {"name": "Slow", "command": "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.4; done"}},
]


@dataclass
class Env:
    server: ServerProcess
    seed: App
    project: Project  # gh/acme/widget: a real repository
    admin_token: str
    reader_token: str
    stranger_token: str
    project_token: str
    states: dict[str, int]  # build state name -> build_num in gh/acme/states
    workflows: dict[str, str]  # workflow status -> the id of a workflow in it, in gh/acme/states


@contextmanager
def _login(server: ServerProcess, token: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base, timeout=30) as client:
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        answer = client.post("/login", data={"token": token, "csrf": csrf.group(1), "next": "/"})
        assert answer.status_code == 303, answer.text
        yield client


def _csrf(client: httpx.Client, path: str = "/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def _seed_states(app: App, project: Project) -> dict[str, int]:
    """One build per awkward state, with actions and logs as a runner would leave them."""
    store, logs = app.circlet.store, app.circlet.logs
    now = datetime.now(UTC)
    earlier = now - timedelta(seconds=30)
    made: dict[str, int] = {}

    def build(name: str, **fields: object) -> Build:
        base = Build(
            project_id=project.id or 0,
            branch="main",
            commit=COMMIT,
            vcs_revision=COMMIT.sha,
            usage_queued_at=earlier,
        )
        created = store.create_build(replace(base, **fields))  # type: ignore[arg-type]
        made[name] = created.build_num
        return created

    def action(
        b: Build,
        step: int,
        status: ActionStatus,
        *,
        index: int = 0,
        output: bytes | None = b"",
        **fields: object,
    ) -> None:
        store.save_action(
            b.id or 0,
            Action(
                step=step,
                index=index,
                name=f"step {step}",
                bash_command="true",
                status=status,
                start_time=earlier,
                end_time=None if status is ActionStatus.RUNNING else now,
                has_output=bool(output),
                **fields,
            ),
        )  # type: ignore[arg-type]
        if output is not None:
            writer = logs.writer(b.id or 0, step, index)
            writer.write(output, earlier)
            writer.close()

    build("queued", lifecycle=Lifecycle.QUEUED)
    build("no_steps_running", lifecycle=Lifecycle.RUNNING, start_time=earlier)
    build(
        "config_error",
        lifecycle=Lifecycle.FINISHED,
        outcome=Outcome.FAILED,
        start_time=earlier,
        stop_time=now,
        config_text="version: 2\njobs: [oops",
        messages=(Message(type="error", message="jobs: not a map", reason="config"),),
    )
    b = build(
        "zero_byte_logs",
        lifecycle=Lifecycle.FINISHED,
        outcome=Outcome.SUCCESS,
        start_time=earlier,
        stop_time=now,
    )
    action(b, 0, ActionStatus.SUCCESS, output=None)
    action(b, 101, ActionStatus.SUCCESS, output=None)
    build("canceled_before_start", outcome=Outcome.CANCELED)
    build(
        "not_run",
        lifecycle=Lifecycle.NOT_RUN,
        dont_build="ci-skip",
        commit=None,
        vcs_revision=None,
        branch=None,
        vcs_tag="v1.0",
    )
    b = build("running", lifecycle=Lifecycle.RUNNING, start_time=earlier)
    action(b, 101, ActionStatus.SUCCESS, output=b"done\n", exit_code=0)
    action(b, 102, ActionStatus.RUNNING, output=b"\x1b[1;33mhalf a line")
    b = build(
        "infrastructure_fail",
        lifecycle=Lifecycle.FINISHED,
        outcome=Outcome.INFRASTRUCTURE_FAIL,
        start_time=earlier,
        stop_time=now,
        messages=(Message(type="error", message="runner died", reason="infrastructure"),),
    )
    action(b, 101, ActionStatus.RUNNING, output=b"was running\n")  # left behind by a dead runner
    b = build(
        "parallel_failed",
        lifecycle=Lifecycle.FINISHED,
        outcome=Outcome.FAILED,
        start_time=earlier,
        stop_time=now,
        parallel=2,
        why=Why.RETRY,
        retry_of=made["running"],
    )
    for index in (0, 1):
        action(
            b,
            101,
            ActionStatus.SUCCESS if index == 0 else ActionStatus.FAILED,
            index=index,
            output=f"container {index}\n".encode(),
            exit_code=index,
        )
    store.add_test_results(
        b.id or 0,
        1,
        [
            {
                "name": "test_ok",
                "classname": "t",
                "file": "t.py",
                "result": "success",
                "message": None,
                "run_time": 0.01,
                "source": "pytest",
            },
            {
                "name": "test_broken",
                "classname": "t",
                "file": "t.py",
                "result": "failure",
                "message": "assert 1 == 2 <oops>",
                "run_time": 0.02,
                "source": "pytest",
            },
        ],
        [],
    )
    b = build(
        "timedout", lifecycle=Lifecycle.FINISHED, outcome=Outcome.TIMEDOUT, start_time=earlier, stop_time=now
    )
    action(b, 101, ActionStatus.TIMEDOUT, output=b"\x1b]0;title\x07\x1b[2Kstuck\r\n\xff\xfe bad utf-8\n")
    return made


def _seed_workflows(app: App, project: Project, builds: dict[str, int]) -> dict[str, str]:
    """One workflow per status, its jobs pointing at the seeded builds (one at a build that is
    gone). The engine never advances them: nothing it waits for changes."""
    engine = app.circlet.workflows
    assert engine is not None
    store = engine.store
    now = datetime.now(UTC)
    S = JobState
    shapes: dict[WorkflowStatus, list[tuple[str, JobState, str | None, int | None]]] = {
        WorkflowStatus.RUNNING: [("build", S.SUCCESS, None, builds["zero_byte_logs"]),
                                 ("test", S.RUNNING, "build", builds["running"])],
        WorkflowStatus.FAILING: [("lint", S.FAILED, None, builds["parallel_failed"]),
                                 ("test", S.RUNNING, None, builds["running"])],
        WorkflowStatus.ON_HOLD: [("build", S.SUCCESS, None, builds["zero_byte_logs"]),
                                 ("hold", S.ON_HOLD, "build", None), ("deploy", S.BLOCKED, "hold", None)],
        WorkflowStatus.SUCCESS: [("build", S.SUCCESS, None, 999_999)],  # its build is gone
        WorkflowStatus.FAILED: [("build", S.FAILED, None, builds["timedout"]),
                                ("deploy", S.NOT_RUN, "build", None)],
        WorkflowStatus.CANCELED: [("build", S.CANCELED, None, builds["canceled_before_start"])],
        WorkflowStatus.NOT_RUN: [("build", S.NOT_RUN, None, None)],
        WorkflowStatus.ERROR: [],
    }  # fmt: skip
    made: dict[str, str] = {}
    for status, jobs in shapes.items():
        pipeline = store.create_pipeline(
            Pipeline(id=str(uuid.uuid4()), project_id=project.id or 0, branch="main")
        )
        workflow = Workflow(
            id=str(uuid.uuid4()),
            pipeline_id=pipeline.id,
            project_id=project.id or 0,
            name=f"wf-{status.value}",
            status=status,
            created_at=now - timedelta(seconds=90),
            stopped_at=None
            if status in (WorkflowStatus.RUNNING, WorkflowStatus.FAILING, WorkflowStatus.ON_HOLD)
            else now,
        )
        store.add_workflow(
            workflow,
            [
                WorkflowJob(
                    id=str(uuid.uuid4()),
                    workflow_id=workflow.id,
                    position=n,
                    name=name,
                    type=JobType.APPROVAL if name == "hold" else JobType.BUILD,
                    requires=(Requirement(job=needs),) if needs else (),
                    state=state,
                    build_num=num,
                )
                for n, (name, state, needs, num) in enumerate(jobs)
            ],
        )
        made[status.value] = workflow.id
    return made


FLOW = """version: 2.1
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    steps: [{run: echo built}]
  deploy:
    docker: [{image: cimg/base:stable}]
    steps: [{run: echo deployed}]
workflows:
  ship:
    jobs:
      - build
      - hold: {type: approval, requires: [build]}
      - deploy: {requires: [hold]}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("web")
    repo = root / "repo"
    make_repo(repo, {".circleci/config.yml": config_yaml(STEPS)})
    make_repo(root / "flow", {".circleci/config.yml": FLOW})
    server = ServerProcess(root / "data", slots=2)
    server.data_dir.mkdir(parents=True)
    server.cli("migrate")
    server.cli("project", "add", "gh/acme/widget", "--repo", str(repo))
    server.cli("project", "add", "gh/acme/states", "--repo", str(repo))
    server.cli("project", "add", "gh/acme/flow", "--repo", str(root / "flow"))
    server.cli("user", "add", "root", "--admin")
    server.cli("user", "add", "reader")
    server.cli("user", "add", "stranger")
    server.cli("project", "grant", "gh/acme/widget", "reader", "--role", "read")
    server.cli("project", "grant", "gh/acme/states", "reader", "--role", "read")
    tokens = {
        who: server.cli("token", "create", "--user", who).stdout.strip()
        for who in ("root", "reader", "stranger")
    }
    server.token = tokens["root"]  # what server.request and wait_finished send
    project_token = server.cli("token", "create", "--project", "gh/acme/widget").stdout.strip()
    seed = build_services(load_settings({"CIRCLET_DATA_DIR": str(server.data_dir)}), migrate_db=False)
    with server:  # seeded after the start: recovery would finish the "running" ones
        states = _seed_states(seed, seed.circlet.get_project("gh", "acme", "states"))
        workflows = _seed_workflows(seed, seed.circlet.get_project("gh", "acme", "states"), states)
        yield Env(
            server=server,
            seed=seed,
            project=seed.circlet.get_project("gh", "acme", "widget"),
            admin_token=tokens["root"],
            reader_token=tokens["reader"],
            stranger_token=tokens["stranger"],
            project_token=project_token,
            states=states,
            workflows=workflows,
        )


@pytest.fixture(scope="module")
def admin(env: Env) -> Iterator[httpx.Client]:
    with _login(env.server, env.admin_token) as client:
        yield client


# ---------------------------------------------------------------- sessions and CSRF


def test_pages_need_a_session(env: Env) -> None:
    with httpx.Client(base_url=env.server.base) as anonymous:
        for path in ("/", "/gh/acme/widget", "/gh/acme/states/1", "/gh/acme/states/1/raw/101/0"):
            answer = anonymous.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next="), path
        fragment = anonymous.get("/dashboard/rows", headers={"x-circlet-fragment": "1"})
        assert fragment.status_code == 401
        # a token in the URL is not a session: pages never take one
        assert anonymous.get("/?circle-token=" + env.admin_token).status_code == 303


def test_sign_in_sets_a_safe_cookie_without_the_token(env: Env) -> None:
    with httpx.Client(base_url=env.server.base) as client:
        page = client.get("/login?next=/gh/acme/widget")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf and "csrf" in " ".join(client.cookies.keys())
        answer = client.post(
            "/login", data={"token": env.admin_token, "csrf": csrf.group(1), "next": "/gh/acme/widget"}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/gh/acme/widget"
        cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("circlet_session="))
        assert (
            "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
        )  # plain http loopback
        assert env.admin_token not in cookie
        # signing in makes a new CSRF value: one known before (planted, seen) no longer works
        assert client.cookies.get("circlet_csrf") not in (None, csrf.group(1))
        stale = client.post("/gh/acme/widget/trigger", data={"csrf": csrf.group(1), "branch": "main"})
        assert stale.status_code == 403
        assert client.get("/").status_code == 200
        # sign out with the form; the session is gone
        out = client.post("/logout", data={"csrf": _csrf(client)})
        assert out.status_code == 303 and client.get("/").status_code == 303


@pytest.mark.parametrize(
    ("which", "status", "words"),
    [
        ("bogus", 401, "not valid"),
        ("project", 401, "Project tokens cannot sign in"),
    ],
)
def test_bad_tokens_do_not_sign_in(env: Env, which: str, status: int, words: str) -> None:
    with httpx.Client(base_url=env.server.base) as client:
        csrf = _csrf(client, "/login")
        token = env.project_token if which == "project" else "nope"
        answer = client.post("/login", data={"token": token, "csrf": csrf})
        assert answer.status_code == status and words in answer.text
        assert "circlet_session" not in client.cookies


def test_forms_need_the_csrf_field_and_our_origin(env: Env, admin: httpx.Client) -> None:
    path = f"/gh/acme/states/{env.states['running']}/retry"
    assert admin.post(path, data={}).status_code == 403
    assert admin.post(path, data={"csrf": "x" * 43}).status_code == 403
    other = admin.post(path, data={"csrf": _csrf(admin)}, headers={"origin": "https://evil.example"})
    assert other.status_code == 403 and "Cross-site" in other.text
    with httpx.Client(base_url=env.server.base) as anonymous:  # no session: the login page, not a retry
        csrf = _csrf(anonymous, "/login")
        assert anonymous.post(path, data={"csrf": csrf}).status_code == 303


def test_tampered_session_cookie_is_no_session(env: Env) -> None:
    with _login(env.server, env.reader_token) as client:
        value = client.cookies["circlet_session"]
        client.cookies.set("circlet_session", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
        assert client.get("/").status_code == 303


# ---------------------------------------------------------------- rights


def test_strangers_see_nothing_private(env: Env) -> None:
    with _login(env.server, env.stranger_token) as client:
        assert "acme/states" not in client.get("/").text
        assert client.get("/gh/acme/states").status_code == 404
        assert client.get(f"/gh/acme/states/{env.states['running']}").status_code == 404
        assert client.get(f"/gh/acme/states/{env.states['running']}/log/102/0").status_code == 404


def test_every_route_refuses_anonymous_and_strangers(env: Env) -> None:
    """Pages, fragments, log windows, raw logs, live streams, the workflow page and graph, and
    every form: a stranger gets 404 (the project is not theirs to know), an anonymous page
    request goes to /login and an anonymous script request gets 401."""
    build = f"/gh/acme/states/{env.states['running']}"
    workflow = f"/gh/acme/states/workflows/{env.workflows['running']}"
    gets = [
        "/gh/acme/states",
        build,
        f"{build}/state",
        f"{build}/log/102/0",
        f"{build}/log/102/0?start=0",
        f"{build}/raw/102/0",
        f"{build}/log/102/0/events",
        workflow,
        f"{workflow}/graph",
    ]
    posts = [f"{build}/retry", f"{build}/retry-without-cache", f"{build}/ssh", f"{build}/cancel"]
    posts += [f"{workflow}/approve", f"{workflow}/cancel"]
    posts += [
        f"/gh/acme/states/{p}" for p in ("trigger", "settings/env", "settings/webhooks", "settings/tokens")
    ]
    with _login(env.server, env.stranger_token) as stranger:
        csrf = _csrf(stranger)
        for path in gets:
            assert stranger.get(path).status_code == 404, path
        for path in posts:
            answer = stranger.post(path, data={"csrf": csrf, "job": "hold", "name": "X", "value": "1"})
            assert answer.status_code == 404, path
    with httpx.Client(base_url=env.server.base, timeout=30) as anonymous:
        for path in gets:
            page = anonymous.get(path)
            assert page.status_code in (303, 401), path  # the events stream is a script's: 401
            assert env.states and "half a line" not in page.text
            fragment = anonymous.get(path, headers={"x-circlet-fragment": "1"})
            assert fragment.status_code == 401 and "message" in fragment.json(), path
        for path in posts:
            assert anonymous.post(path, data={"csrf": "x"}).status_code == 403, path  # no CSRF cookie


def test_readers_see_builds_but_no_buttons_or_settings(env: Env) -> None:
    with _login(env.server, env.reader_token) as client:
        page = client.get(f"/gh/acme/states/{env.states['running']}")
        assert page.status_code == 200
        assert "Retry</button>" not in page.text and "Cancel</button>" not in page.text
        project = client.get("/gh/acme/states").text
        assert "Trigger build" not in project and "Environment variables" not in project
        denied = client.post(f"/gh/acme/states/{env.states['running']}/cancel", data={"csrf": _csrf(client)})
        assert denied.status_code == 403


# ---------------------------------------------------------------- every build state


@pytest.mark.parametrize(
    "state",
    [
        "queued",
        "no_steps_running",
        "config_error",
        "zero_byte_logs",
        "canceled_before_start",
        "not_run",
        "running",
        "infrastructure_fail",
        "parallel_failed",
        "timedout",
    ],
)
def test_no_page_or_fragment_fails_for_any_state(env: Env, admin: httpx.Client, state: str) -> None:
    num = env.states[state]
    base = f"/gh/acme/states/{num}"
    page = admin.get(base)
    assert page.status_code == 200, page.text
    assert admin.get("/github/acme/states/" + str(num)).status_code == 200  # the API's vcs spelling
    assert admin.get(base + "/state?sig=stale").status_code == 200
    for step, index in re.findall(r'data-url="[^"]*/log/(\d+)/(\d+)"', page.text):
        window = admin.get(f"{base}/log/{step}/{index}")
        assert window.status_code == 200 and {"html", "start", "end", "size"} <= window.json().keys()
        assert admin.get(f"{base}/log/{step}/{index}?end=3").status_code == 200
        assert admin.get(f"{base}/raw/{step}/{index}").status_code == 200
        with admin.stream("GET", f"{base}/log/{step}/{index}/events") as events:
            assert events.status_code == 200
            first = next(events.iter_lines())  # the retry line; a running step would stream on
            assert first.startswith("retry:")
    assert admin.get(base + "/log/999/0").status_code == 404
    for path in ("/", f"/?project=gh/acme/states&status={state.split('_')[0]}", "/gh/acme/states"):
        assert admin.get(path).status_code == 200


def test_build_page_shows_what_went_wrong(env: Env, admin: httpx.Client) -> None:
    page = admin.get(f"/gh/acme/states/{env.states['parallel_failed']}").text
    assert "Fix the &lt;b&gt;frobnicator&lt;/b&gt;" in page  # escaped, never markup
    assert 'role="tab"' in page and "container 1" in page
    assert re.search(r'<details class="step bad"[^>]*open', page)  # the failed step is open
    assert page.index("test_broken") < page.index("test_ok")  # failures first
    assert "assert 1 == 2 &lt;oops&gt;" in page
    assert f'href="/gh/acme/states/{env.states["running"]}"' in page  # retry_of link
    config = admin.get(f"/gh/acme/states/{env.states['config_error']}").text
    assert "jobs: not a map" in config and "This build ran no steps" in config
    timed = admin.get(f"/gh/acme/states/{env.states['timedout']}/log/101/0").json()["html"]
    assert "title" not in timed and "stuck" in timed and "\ufffd" in timed  # OSC dropped, bad bytes replaced


def test_dashboard_filters_and_pages(env: Env, admin: httpx.Client) -> None:
    failed = admin.get("/?status=failed&project=gh/acme/states").text
    assert f"#{env.states['config_error']}<" in failed and f"#{env.states['running']}<" not in failed
    running = admin.get("/?status=running").text
    assert f"states #{env.states['running']}<" in running
    tagged = admin.get("/?branch=nope").text
    assert "No builds match these filters" in tagged
    first = admin.get("/").text
    assert 'rel="next"' not in first  # fewer builds than a page
    rows = admin.get("/dashboard/rows?project=gh/acme/states", headers={"x-circlet-fragment": "1"})
    assert rows.status_code == 200 and rows.headers["x-circlet-live"] == "1" and "<tr" in rows.text


# ---------------------------------------------------------------- real builds


def test_trigger_watch_live_and_cancel(env: Env, admin: httpx.Client) -> None:
    answer = admin.post("/gh/acme/widget/trigger", data={"csrf": _csrf(admin), "branch": "main"})
    assert answer.status_code == 303
    build_path = answer.headers["location"]
    assert re.fullmatch(r"/gh/acme/widget/\d+", build_path)
    deadline = time.monotonic() + 20
    while 'data-running="1"' not in (page := admin.get(build_path).text):
        assert time.monotonic() < deadline, page
        time.sleep(0.1)
    step = re.search(r'data-url="[^"]*/log/(\d+)/0" data-running="1"', page)
    assert step is not None
    seen: list[str] = []
    with admin.stream("GET", f"{build_path}/log/{step.group(1)}/0/events?offset=0") as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                seen.append(line)
            if line == "event: end":
                break
    assert len([s for s in seen if "tick" in s]) >= 2  # the log arrived in pieces, live
    assert "tick 6" in "".join(seen)
    env.server.wait_finished("gh/acme/widget", int(build_path.rsplit("/", 1)[1]))
    hello = admin.get(build_path + "/log/101/0").json()["html"]
    assert '<span class="fg2">hello</span> &lt;world&gt;' in hello

    # cancel a running build from its page
    second = admin.post("/gh/acme/widget/trigger", data={"csrf": _csrf(admin), "branch": "main"})
    path = second.headers["location"]
    while 'data-running="1"' not in admin.get(path).text:  # running, not just waiting
        time.sleep(0.05)
    assert admin.post(path + "/cancel", data={"csrf": _csrf(admin)}).status_code == 303
    done = env.server.wait_finished("gh/acme/widget", int(path.rsplit("/", 1)[1]))
    assert done["status"] == "canceled"
    retried = admin.post(path + "/retry", data={"csrf": _csrf(admin)})
    assert retried.status_code == 303 and retried.headers["location"] != path
    assert "Retry of" in admin.get(retried.headers["location"]).text
    fresh = admin.post(path + "/retry-without-cache", data={"csrf": _csrf(admin)})
    assert fresh.status_code == 303 and fresh.headers["location"] not in (path, retried.headers["location"])
    status, build = env.server.request(
        "GET", "/api/v1.1/project/gh/acme/widget/" + fresh.headers["location"].rsplit("/", 1)[1]
    )
    assert (
        status == 200
        and build["no_dependency_cache"] is True
        and build["retry_of"] == int(path.rsplit("/", 1)[1])
    )


def test_admin_settings_forms(env: Env, admin: httpx.Client) -> None:
    csrf = _csrf(admin, "/gh/acme/widget")
    assert (
        admin.post(
            "/gh/acme/widget/settings/env", data={"csrf": csrf, "name": "API_KEY", "value": "supersecret1234"}
        ).status_code
        == 303
    )
    page = admin.get("/gh/acme/widget").text
    assert "API_KEY" in page and "supersecret1234" not in page and "1234" in page
    bad = admin.post("/gh/acme/widget/settings/env", data={"csrf": csrf, "name": "1bad", "value": "x"})
    assert bad.status_code == 400 and "Invalid environment variable name" in bad.text
    hook = admin.post(
        "/gh/acme/widget/settings/webhooks", data={"csrf": csrf, "url": "https://hooks.example/x"}
    )
    assert hook.status_code == 303 and "https://hooks.example/x" in admin.get("/gh/acme/widget").text
    made = admin.post(
        "/gh/acme/widget/settings/tokens", data={"csrf": csrf, "scope": "view-builds", "label": "badge"}
    )
    secret = re.search(r'<code class="secret">([^<]+)</code>', made.text)
    assert made.status_code == 200 and secret is not None
    status, _ = env.server.request("GET", "/api/v1.1/project/gh/acme/widget", token=secret.group(1))
    assert status == 200
    assert (
        admin.post(
            "/gh/acme/widget/settings/env", data={"csrf": csrf, "name": "API_KEY", "delete": "1"}
        ).status_code
        == 303
    )
    assert "API_KEY" not in admin.get("/gh/acme/widget").text


def test_a_100_mb_log_opens_at_its_tail_quickly(env: Env, admin: httpx.Client) -> None:
    store, logs = env.seed.circlet.store, env.seed.circlet.logs
    project = env.seed.circlet.get_project("gh", "acme", "states")
    now = datetime.now(UTC)
    build = store.create_build(
        Build(
            project_id=project.id or 0,
            branch="big",
            lifecycle=Lifecycle.FINISHED,
            outcome=Outcome.FAILED,
            start_time=now,
            stop_time=now,
        )
    )
    store.save_action(
        build.id or 0,
        Action(
            step=101,
            name="huge",
            status=ActionStatus.FAILED,
            exit_code=1,
            start_time=now,
            end_time=now,
            has_output=True,
        ),
    )
    line = b"\x1b[36m%08d\x1b[0m the quick brown fox jumps over the lazy dog, again and again\n"
    block = b"".join(line % i for i in range(100))
    writer = logs.writer(build.id or 0, 101, 0)
    total = 0
    while total < 100 * 1024 * 1024:
        writer.write(block, now)
        total += len(block)
    writer.write(b"THE VERY END\n", now)
    writer.close()
    started = time.monotonic()
    page = admin.get(f"/gh/acme/states/{build.build_num}")
    took = time.monotonic() - started
    assert page.status_code == 200 and "THE VERY END" in page.text
    assert len(page.content) < 1_000_000  # the tail, not the log
    assert took < 2.0, f"the build page took {took:.2f}s"
    earlier = admin.get(f"/gh/acme/states/{build.build_num}/log/101/0?end=1000000").json()
    assert earlier["end"] <= 1_000_000 and earlier["start"] >= 1_000_000 - 256 * 1024
    # a window asked from the start, or for a huge range, is one window, never the whole log
    for query in ("start=0", "start=0&end=104857600", "start=5000000&end=99000000"):
        started = time.monotonic()
        answer = admin.get(f"/gh/acme/states/{build.build_num}/log/101/0?{query}")
        window = answer.json()
        assert answer.status_code == 200 and window["end"] - window["start"] <= 256 * 1024, query
        assert len(answer.content) < 3_000_000 and time.monotonic() - started < 2.0, query
    print(f"100 MB log: build page with its tail in {took * 1000:.0f} ms ({len(page.content)} bytes)")


def test_unknown_api_paths_are_json_404_for_every_method(env: Env, admin: httpx.Client) -> None:
    for method, path in (
        ("GET", "/api/v1.1/no/such"),
        ("POST", "/api/v1.1/project/trigger"),
        ("POST", "/api/v1.1/project/gh/retry"),
        ("GET", "/api/v1.1/project/gh/1/log/1/0"),
    ):
        answer = admin.request(method, path)
        assert answer.status_code == 404 and answer.headers["content-type"].startswith("application/json")


# ---------------------------------------------------------------- workflows

ACTIVE_STATUSES = ("running", "failing", "on_hold")


def _columns(page: str) -> list[list[str]]:
    """The job names of each column of the graph, left to right."""
    graph = page[page.index('<ol class="graph"') :]
    return [re.findall(r'data-job="([^"]+)"', col) for col in graph.split('<li class="col">')[1:]]


@pytest.mark.parametrize("status", [s.value for s in WorkflowStatus])
def test_workflow_page_for_every_status(env: Env, admin: httpx.Client, status: str) -> None:
    path = f"/gh/acme/states/workflows/{env.workflows[status]}"
    page = admin.get(path)
    assert page.status_code == 200, page.text
    text, active = page.text, status in ACTIVE_STATUSES
    assert f"<title>{status.replace('_', ' ')} · wf-{status} · gh/acme/states · circlet</title>" in text
    assert f'data-live="{1 if active else 0}"' in text
    assert ("Cancel workflow</button>" in text) is active
    assert ("Approve hold</button>" in text) is (status == "on_hold")
    fragment = {"x-circlet-fragment": "1"}
    graph = admin.get(path + "/graph", headers=fragment)
    assert graph.status_code == 200 and graph.headers["x-circlet-live"] == ("1" if active else "0")
    sig = graph.headers["x-circlet-sig"]
    assert f'data-sig="{sig}"' in text and "Approve" not in graph.text.split("</h2>")[0]
    unchanged = admin.get(path + "/graph", params={"sig": sig}, headers=fragment)
    assert (
        unchanged.status_code == 204
        and unchanged.headers["x-circlet-live"] == graph.headers["x-circlet-live"]
    )
    built = env.states
    expected = {
        "running": [["build"], ["test"]],
        "failing": [["lint", "test"]],
        "on_hold": [["build"], ["hold"], ["deploy"]],
        "success": [["build"]],
        "failed": [["build"], ["deploy"]],
        "canceled": [["build"]],
        "not_run": [["build"]],
        "error": [],
    }[status]
    assert _columns(text) == expected
    if status == "running":
        assert f'<a href="/gh/acme/states/{built["zero_byte_logs"]}">build</a>' in text
        assert re.search(r'class="job run" data-job="test"', text) and "needs build" in text
    if status == "on_hold":
        assert (
            'class="job hold" data-job="hold"' in text and "needs hold" in text and "approval</span>" in text
        )
    if status == "success":
        assert "#999999" in text  # a job whose build is gone still shows
    if status == "error":
        assert "No job of this workflow was recorded" in text


def test_workflow_paths_that_are_not_workflows(env: Env, admin: httpx.Client) -> None:
    other = env.workflows["on_hold"]
    for path in (
        "/gh/acme/states/workflows/not-a-uuid",
        f"/gh/acme/states/workflows/{uuid.uuid4()}",
        f"/gh/acme/widget/workflows/{other}",  # another project's workflow
        f"/gh/acme/widget/workflows/{other}/graph",
        "/gh/acme/states/workflows",
    ):
        answer = admin.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
    csrf = _csrf(admin)
    refused = admin.post(f"/gh/acme/widget/workflows/{other}/approve", data={"csrf": csrf, "job": "hold"})
    assert refused.status_code == 404
    assert (
        admin.get(f"/gh/acme/states/workflows/{other}").text.count("Approve hold</button>") == 1
    )  # unchanged


def test_readers_see_workflows_but_may_not_act(env: Env) -> None:
    path = f"/gh/acme/states/workflows/{env.workflows['on_hold']}"
    with _login(env.server, env.reader_token) as reader:
        page = reader.get(path).text
        assert 'data-job="hold"' in page and "Approve" not in page and "Cancel workflow" not in page
        csrf = _csrf(reader)
        assert reader.post(path + "/approve", data={"csrf": csrf, "job": "hold"}).status_code == 403
        assert reader.post(path + "/cancel", data={"csrf": csrf}).status_code == 403
    with _login(env.server, env.stranger_token) as stranger:
        assert stranger.get(path).status_code == 404


def _wait_for(client: httpx.Client, path: str, pattern: str, seconds: float = 40) -> str:
    deadline = time.monotonic() + seconds
    while not re.search(pattern, page := client.get(path).text):
        assert time.monotonic() < deadline, f"{pattern!r} never showed on {path}: {page}"
        time.sleep(0.1)
    return page


def _flow_on_hold(admin: httpx.Client) -> tuple[str, str]:
    """Trigger gh/acme/flow; wait until its `hold` is on hold: (build page, workflow page)."""
    answer = admin.post("/gh/acme/flow/trigger", data={"csrf": _csrf(admin), "branch": "main"})
    assert answer.status_code == 303
    build = answer.headers["location"]
    assert re.fullmatch(r"/gh/acme/flow/\d+", build), build
    page = _wait_for(admin, build, "Approve hold</button>")
    found = re.search(r'<a href="(/gh/acme/flow/workflows/[0-9a-f-]{36})"><code>ship</code></a>', page)
    assert found is not None, page
    return build, found.group(1)


def test_approve_from_the_workflow_page(env: Env, admin: httpx.Client) -> None:
    build, workflow = _flow_on_hold(admin)
    page = admin.get(build).text
    # the build ended, the workflow did not: its graph keeps refreshing, the build does not
    assert 'data-unfinished="0"' in page and re.search(
        r'id="wf" data-poll="[^"]+" data-sig="\w+" data-live="1"', page
    )
    assert f'<dt>Workflow</dt><dd><a href="{workflow}">ship</a></dd>' in page
    rows = admin.get("/?project=gh/acme/flow").text
    assert f'<a href="{workflow}" title="workflow ship">ship</a> \u203a build' in rows
    page = admin.get(workflow).text
    assert _columns(page) == [["build"], ["hold"], ["deploy"]] and 'data-status="blocked"' in page
    assert admin.post(workflow + "/approve", data={"job": "hold"}).status_code == 403  # no CSRF field
    wrong = admin.post(workflow + "/approve", data={"csrf": _csrf(admin), "job": "build"})
    assert wrong.status_code == 400 and "not an approval" in wrong.text
    approved = admin.post(workflow + "/approve", data={"csrf": _csrf(admin), "job": "hold", "back": workflow})
    assert approved.status_code == 303 and approved.headers["location"] == workflow
    again = admin.post(  # as the page's script sends it: errors come back as JSON
        workflow + "/approve",
        data={"csrf": _csrf(admin), "job": "deploy"},
        headers={"x-circlet-fragment": "1"},
    )
    assert again.status_code == 400 and "not an approval" in again.json()["message"]
    page = _wait_for(admin, workflow, r'Workflow <code>ship</code> <span class="status ok">')  # it succeeded
    assert 'data-job="deploy" data-status="success"' in page
    assert re.search(r'<a href="/gh/acme/flow/\d+">deploy</a>', page)
    assert "Approve" not in page and 'data-live="0"' in page and "Cancel workflow" not in page
    graph = admin.get(workflow + "/graph", headers={"x-circlet-fragment": "1"})
    assert graph.headers["x-circlet-live"] == "0"


def test_cancel_a_workflow_from_its_page(env: Env, admin: httpx.Client) -> None:
    build, workflow = _flow_on_hold(admin)
    assert admin.post(workflow + "/cancel", data={"back": build}).status_code == 403  # no CSRF field
    canceled = admin.post(workflow + "/cancel", data={"csrf": _csrf(admin), "back": build})
    assert canceled.status_code == 303 and canceled.headers["location"] == build
    page = admin.get(workflow).text
    assert (
        'data-job="hold" data-status="canceled"' in page and 'data-job="deploy" data-status="not_run"' in page
    )
    assert "Approve" not in page and "Cancel workflow" not in page and 'data-live="0"' in page
    evil = admin.post(workflow + "/cancel", data={"csrf": _csrf(admin), "back": "//evil.example/"})
    assert evil.status_code == 303 and evil.headers["location"] == "/"  # never another site


def test_why_reads_as_a_word_on_every_page(env: Env, admin: httpx.Client) -> None:
    store = env.seed.circlet.store
    project = env.seed.circlet.get_project("gh", "acme", "states")
    words = {
        "github": "push", "bitbucket": "push", "api": "API trigger", "trigger": "manual trigger",
        "retry": "retry", "ssh": "retry with SSH", "auto-retry": "automatic retry", "edit": "settings change",
        "first-build": "first build", "local": "local build", "scheduled_pipeline": "schedule",
    }  # fmt: skip
    assert {w.value for w in Why} == set(words)
    made = {
        why.value: store.create_build(
            Build(project_id=project.id or 0, branch="whys", why=why, outcome=Outcome.SUCCESS)
        ).build_num
        for why in Why
    }
    rows = admin.get("/?branch=whys").text
    for code, number in made.items():
        shown = f'<span class="why" title="{code}">{words[code]}</span>'
        assert shown in rows, code
        assert shown in admin.get(f"/gh/acme/states/{number}").text, code


def test_revoking_the_token_ends_its_sessions(env: Env) -> None:
    secret = env.server.cli("token", "create", "--user", "reader").stdout.strip()
    token = env.seed.circlet.store.find_token(hash_token(secret))
    assert token is not None and token.id is not None
    with _login(env.server, secret) as client:
        assert client.get("/").status_code == 200
        env.server.cli("token", "revoke", str(token.id))
        deadline = time.monotonic() + 15  # the server trusts a looked-up token for a few seconds
        while client.get("/").status_code == 200:
            assert time.monotonic() < deadline, "the session outlived its token"
            time.sleep(0.5)
        assert client.get("/").headers["location"].startswith("/login")


def test_dashboard_pages_by_25(env: Env, admin: httpx.Client) -> None:
    store = env.seed.circlet.store
    project = env.seed.circlet.get_project("gh", "acme", "states")
    made = [
        store.create_build(
            Build(project_id=project.id or 0, branch="paging", outcome=Outcome.CANCELED)
        ).build_num
        for _ in range(30)
    ]
    first = admin.get("/?branch=paging").text
    assert first.count("<tr class=") == 25 and f"#{made[-1]}<" in first and 'rel="next"' in first
    assert 'rel="prev"' not in first
    second = admin.get("/?branch=paging&offset=25").text
    assert second.count("<tr class=") == 5 and f"#{made[0]}<" in second and 'rel="prev"' in second
    assert 'rel="next"' not in second


def test_a_stream_far_behind_skips_to_the_tail(env: Env, admin: httpx.Client) -> None:
    store, logs = env.seed.circlet.store, env.seed.circlet.logs
    project = env.seed.circlet.get_project("gh", "acme", "states")
    now = datetime.now(UTC)
    build = store.create_build(
        Build(project_id=project.id or 0, branch="fast", lifecycle=Lifecycle.RUNNING, start_time=now)
    )
    store.save_action(
        build.id or 0, Action(step=101, name="loud", status=ActionStatus.RUNNING, start_time=now)
    )
    writer = logs.writer(build.id or 0, 101, 0)
    for _ in range(10_000):
        writer.write(b"y" * 99 + b"\n", now)  # 1 MB, more than a page could follow
    writer.close()
    events: list[str] = []
    with admin.stream("GET", f"/gh/acme/states/{build.build_num}/log/101/0/events?offset=0") as answer:
        for line in answer.iter_lines():
            events.append(line)
            if line.startswith("data:") and '"html"' in line:
                break
    assert "event: skipped" in events and "event: chunk" in events
    chunk = json.loads(events[-1][len("data: ") :])
    assert chunk["end"] == 1_000_000 and chunk["start"] >= 1_000_000 - 64 * 1024


def test_live_streams_are_capped_per_session_and_freed_when_closed(env: Env) -> None:
    """A session may keep MAX_STREAMS_PER_SESSION live logs open; one more is told `busy`
    (200, then nothing: the page retries later), and closing streams frees their places.
    Another session is not affected."""
    from contextlib import ExitStack

    from circlet.http.web.logview import MAX_STREAMS_PER_SESSION

    url = f"/gh/acme/states/{env.states['running']}/log/102/0/events"

    readers: list[Iterator[str]] = []  # kept: a dropped reader closes its connection

    def first_event(client: httpx.Client, stack: ExitStack) -> str:
        answer = stack.enter_context(client.stream("GET", url))
        assert answer.status_code == 200
        lines = answer.iter_lines()
        readers.append(lines)
        for line in lines:
            if line.startswith(("retry:", "event:")):
                return line
        return ""

    with _login(env.server, env.admin_token) as greedy, _login(env.server, env.reader_token) as other:
        with ExitStack() as held:
            for _ in range(MAX_STREAMS_PER_SESSION):
                assert first_event(greedy, held).startswith("retry:")  # streaming (a running step)
            with ExitStack() as extra:
                assert first_event(greedy, extra) == "event: busy"
                assert first_event(other, extra).startswith("retry:")  # another session streams
        deadline = time.monotonic() + 30
        while True:  # the server notices the closed streams within a poll or two
            with ExitStack() as again:
                if first_event(greedy, again).startswith("retry:"):
                    break
            assert time.monotonic() < deadline, "closed streams were never freed"
            time.sleep(0.5)
