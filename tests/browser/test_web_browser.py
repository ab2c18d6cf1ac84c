"""What a person does on the page, in a real browser against a real server: sign in, trigger a
build, watch its log grow live, see it fail, open the failed step, read the test failures,
download an artifact, retry, cancel a running build; a 100 MB log opens at its tail; the
page fits a phone and reads well.

The tests of this module share one server and one signed-in page and run in order (each
builds on the previous one's build), as a person would use the page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from circlet.bootstrap import build_services
from circlet.core.model import Action, ActionStatus, Build, Lifecycle, Outcome
from circlet.harness import ServerProcess, config_yaml, make_repo
from circlet.settings import load_settings

pytestmark = pytest.mark.timeout(120)

JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="suite" tests="2" failures="1">
  <testcase classname="widget.test_core" name="test_adds" file="tests/test_core.py" time="0.01"/>
  <testcase classname="widget.test_core" name="test_divides" file="tests/test_core.py" time="0.02">
    <failure message="ZeroDivisionError: division by zero">Traceback: boom</failure>
  </testcase>
</testsuite>
"""
STEPS: list[str | dict[str, Any]] = [
    "checkout",
    {"run": {"name": "Say hello", "command": "printf '\\033[32mhello\\033[0m from circlet\\n'"}},
    {"run": {"name": "Grow", "command": "for i in $(seq 1 16); do echo tick $i; sleep 0.3; done"}},
    {
        "run": {
            "name": "Write reports",
            "command": "mkdir -p reports out && cp ci/junit.xml reports/ && "
            "echo artifact-body > out/hello.txt",
        }
    },
    {"store_test_results": {"path": "reports"}},
    {"store_artifacts": {"path": "out/hello.txt"}},
    {"run": {"name": "Fail on purpose", "command": "printf '\\033[31mabout to fail\\033[0m\\n'; exit 3"}},
]


FLOW = """version: 2.1
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    steps: [{run: sleep 2; echo built}]
  deploy:
    docker: [{image: cimg/base:stable}]
    steps: [{run: sleep 1; echo deployed}]
workflows:
  ship:
    jobs:
      - build
      - hold: {type: approval, requires: [build]}
      - deploy: {requires: [hold]}
"""


@dataclass
class Site:
    server: ServerProcess
    token: str
    page: Any  # playwright Page, signed in
    shots: Path
    state: dict[str, str]  # what one test leaves for the next


@pytest.fixture(scope="module")
def site(browser: Any, artifacts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    make_repo(root / "repo", {".circleci/config.yml": config_yaml(STEPS), "ci/junit.xml": JUNIT})
    server = ServerProcess(root / "data", slots=2)
    server.data_dir.mkdir(parents=True)
    server.cli("migrate")
    server.cli("project", "add", "gh/acme/widget", "--repo", str(root / "repo"))
    make_repo(root / "flow", {".circleci/config.yml": FLOW})
    server.cli("project", "add", "gh/acme/flow", "--repo", str(root / "flow"))
    server.cli("user", "add", "ada", "--admin")
    token = server.cli("token", "create", "--user", "ada").stdout.strip()
    with server:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield Site(server=server, token=token, page=page, shots=artifacts_dir, state={})
        finally:
            context.close()  # closes the page's event streams before the server stops


def test_sign_in(site: Site) -> None:
    page = site.page
    page.goto(site.server.base + "/")
    assert page.url.startswith(site.server.base + "/login")  # nothing private without a session
    page.fill("#token", site.token)
    page.click("button:text('Sign in')")
    page.wait_for_selector("h1:text('Recent builds')")
    assert site.token not in page.url
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["circlet_session"]["httpOnly"] and cookies["circlet_session"]["sameSite"] == "Lax"
    assert site.token not in cookies["circlet_session"]["value"]


def test_trigger_and_watch_the_log_grow_live(site: Site) -> None:
    page = site.page
    page.goto(site.server.base + "/gh/acme/widget")
    page.fill("#trigger-branch", "main")
    page.click("button:text('Trigger build')")
    page.wait_for_url(re.compile(r".*/gh/acme/widget/\d+$"))
    site.state["failed"] = page.url
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    page.wait_for_function(f"() => {GROW_TICKS} >= 1")
    first = page.evaluate(f"() => {GROW_TICKS}")
    page.wait_for_function(f"() => {GROW_TICKS} >= {first + 3}")  # it grew while we watched
    assert (
        page.locator("details.step", has_text="Grow").locator("pre.log").get_attribute("data-running") == "1"
    )
    assert page.evaluate("window.__sameDocument") is True  # by streaming, not by reloading


def test_see_it_fail_and_open_the_failed_step(site: Site) -> None:
    page = site.page
    page.locator(".buildhead .status", has_text="failed").wait_for(timeout=30_000)
    failed = page.locator("details.step.bad")
    assert failed.count() == 1 and "Fail on purpose" in failed.inner_text()
    assert failed.get_attribute("open") is not None  # failed steps are open by default
    log = failed.locator("pre.log")
    assert "about to fail" in log.inner_text()
    assert log.locator("span.fg1", has_text="about to fail").count() == 1  # ANSI red, as a class
    # a closed step opens with the keyboard and loads its log on demand
    hello = page.locator("details.step", has_text="Say hello")
    assert hello.get_attribute("open") is None
    hello.locator("summary").focus()
    page.keyboard.press("Enter")
    hello.locator("pre.log span.fg2", has_text="hello").wait_for()
    # timestamps on demand
    assert not hello.locator(".ts").first.is_visible()
    hello.locator("button.stamps").click()
    assert hello.locator(".ts").first.is_visible()
    page.screenshot(path=str(site.shots / "failed-build.png"), full_page=True)


def test_see_test_failures_first(site: Site) -> None:
    rows = site.page.locator("section.tests tbody tr")
    assert rows.count() == 2
    assert "test_divides" in rows.nth(0).inner_text() and "ZeroDivisionError" in rows.nth(0).inner_text()
    assert "1 failed" in site.page.locator("#tests-h").inner_text()


def test_download_an_artifact(site: Site) -> None:
    page = site.page
    link = page.locator("section.artifacts a", has_text="hello.txt")
    with page.expect_download() as info:
        link.click()
    path = info.value.path()
    assert Path(path).read_text() == "artifact-body\n"


def test_retry_then_cancel_the_running_build(site: Site) -> None:
    page = site.page
    page.goto(site.state["failed"])
    page.click("button:text-is('Retry')")
    page.wait_for_url(lambda url: url != site.state["failed"])
    assert page.locator(".facts", has_text="Retry of").count() == 1
    page.locator("details.step[open]", has_text="Grow").wait_for(timeout=20_000)  # it runs
    page.click("button:text-is('Cancel')")
    page.locator(".buildhead .status", has_text="canceled").wait_for(timeout=20_000)
    assert page.locator("button:text-is('Cancel')").count() == 0


def test_dashboard_shows_and_filters_builds(site: Site) -> None:
    page = site.page
    page.goto(site.server.base + "/")
    rows = page.locator("#rows tr")
    assert rows.count() >= 2
    assert "failed" in page.locator("#rows").inner_text() and "canceled" in page.locator("#rows").inner_text()
    page.screenshot(path=str(site.shots / "dashboard.png"), full_page=True)
    # it updates itself: a build triggered elsewhere appears, runs and fails without a reload
    page.evaluate("window.__sameDocument = true")
    status, made = site.server.request("POST", "/api/v1.1/project/gh/acme/widget/tree/main", token=site.token)
    assert status == 201
    row = page.locator("#rows tr", has_text=f"gh/acme/widget #{made['build_num']}")
    row.wait_for(timeout=15_000)
    row.locator(".status", has_text="failed").wait_for(timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    page.select_option("select[name=status]", "canceled")
    page.click("button:text('Filter')")
    page.wait_for_url(re.compile(r".*status=canceled.*"))
    assert "failed" not in page.locator("#rows").inner_text()


def test_phone_screen_keyboard_and_contrast(site: Site) -> None:
    page = site.page
    page.set_viewport_size({"width": 375, "height": 740})
    try:
        for path in ("/", site.state["failed"]):
            page.goto(site.server.base + path if path.startswith("/") else path)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            wide = page.evaluate(WIDE_JS) if overflow > 1 else []
            assert overflow <= 1, f"{path} scrolls sideways on a phone by {overflow}px: {wide}"
        page.screenshot(path=str(site.shots / "failed-build-phone.png"), full_page=False)
        # the first Tab reaches the skip link
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        ratios = page.evaluate(CONTRAST_JS)
        low = [r for r in ratios if r[1] < 4.5]
        assert ratios and not low, f"text below 4.5:1 contrast: {low[:5]}"
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_a_100_mb_log_opens_at_its_tail_in_under_2_seconds(site: Site) -> None:
    seed = build_services(load_settings({"CIRCLET_DATA_DIR": str(site.server.data_dir)}), migrate_db=False)
    circlet = seed.circlet
    project = circlet.get_project("gh", "acme", "widget")
    now = datetime.now(UTC)
    build = circlet.store.create_build(
        Build(
            project_id=project.id or 0,
            branch="big",
            lifecycle=Lifecycle.FINISHED,
            outcome=Outcome.FAILED,
            start_time=now,
            stop_time=now,
        )
    )
    circlet.store.save_action(
        build.id or 0,
        Action(
            step=101,
            name="Huge output",
            status=ActionStatus.FAILED,
            exit_code=1,
            start_time=now,
            end_time=now,
            has_output=True,
        ),
    )
    block = b"".join(
        b"\x1b[36m%08d\x1b[0m lorem ipsum dolor sit amet, consectetur adipiscing\n" % i for i in range(200)
    )
    writer = circlet.logs.writer(build.id or 0, 101, 0)
    for _ in range(100 * 1024 * 1024 // len(block) + 1):
        writer.write(block, now)
    writer.write(b"THE LAST LINE\n", now)
    writer.close()
    page = site.page
    started = time.monotonic()
    page.goto(f"{site.server.base}/gh/acme/widget/{build.build_num}")
    page.locator("pre.log", has_text="THE LAST LINE").wait_for()
    took = time.monotonic() - started
    held = page.evaluate("document.querySelector('pre.log').textContent.length")
    assert took < 2.0, f"the tail of a 100 MB log took {took:.2f}s"
    assert held < 200_000  # the tail only
    earlier = page.locator("button.earlier")
    earlier.click()
    page.wait_for_function(f"() => document.querySelector('pre.log').textContent.length > {held}")
    print(f"100 MB log: tail shown in the browser after {took * 1000:.0f} ms ({held} characters held)")


def test_one_tab_per_container(site: Site) -> None:
    seed = build_services(load_settings({"CIRCLET_DATA_DIR": str(site.server.data_dir)}), migrate_db=False)
    circlet = seed.circlet
    project = circlet.get_project("gh", "acme", "widget")
    now = datetime.now(UTC)
    build = circlet.store.create_build(
        Build(
            project_id=project.id or 0,
            branch="par",
            parallel=3,
            lifecycle=Lifecycle.FINISHED,
            outcome=Outcome.FAILED,
            start_time=now,
            stop_time=now,
        )
    )
    for index in range(3):
        failed = index == 1
        circlet.store.save_action(
            build.id or 0,
            Action(
                step=101,
                index=index,
                name="Split tests",
                start_time=now,
                end_time=now,
                has_output=True,
                status=ActionStatus.FAILED if failed else ActionStatus.SUCCESS,
                exit_code=int(failed),
            ),
        )
        writer = circlet.logs.writer(build.id or 0, 101, index)
        writer.write(f"output of container {index}\n".encode(), now)
        writer.close()
    page = site.page
    page.goto(f"{site.server.base}/gh/acme/widget/{build.build_num}")
    tabs = page.locator("[role=tab]")
    assert tabs.count() == 3
    assert tabs.nth(1).get_attribute("aria-selected") == "true"  # the failed container first
    page.locator("#panel-101-1 pre.log", has_text="output of container 1").wait_for()
    assert page.locator("#panel-101-0").is_hidden()
    tabs.nth(1).focus()
    page.keyboard.press("ArrowRight")  # keyboard: the next container, its log fetched on demand
    assert tabs.nth(2).get_attribute("aria-selected") == "true"
    page.locator("#panel-101-2 pre.log", has_text="output of container 2").wait_for()
    assert page.locator("#panel-101-1").is_hidden()
    tabs.nth(0).click()
    page.locator("#panel-101-0 pre.log", has_text="output of container 0").wait_for()


def test_approve_on_the_workflow_page_and_see_deploy_start(site: Site) -> None:
    page = site.page
    page.goto(site.server.base + "/gh/acme/flow")
    page.fill("#trigger-branch", "main")
    page.click("button:text('Trigger build')")
    page.wait_for_url(re.compile(r".*/gh/acme/flow/\d+$"))
    page.evaluate("window.__sameDocument = true")
    # the build page of `build`: once it ends, its workflow's graph goes on refreshing
    page.locator(".buildhead .status", has_text="success").wait_for(timeout=30_000)
    page.locator("#wf button", has_text="Approve hold").wait_for(timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    page.click("#wf h2 a")  # to the workflow page
    page.wait_for_url(re.compile(r".*/gh/acme/flow/workflows/[0-9a-f-]{36}$"))
    assert page.locator("#wf li.col").count() == 3  # build | hold | deploy, by depth
    assert page.locator("li.job[data-job=deploy]").get_attribute("data-status") == "blocked"
    page.screenshot(path=str(site.shots / "workflow-on-hold.png"), full_page=True)
    page.evaluate("window.__sameDocument = true")
    page.click("button:text('Approve hold')")
    deploy = page.locator("li.job[data-job=deploy]")
    deploy.locator("a", has_text="deploy").wait_for(timeout=15_000)  # it got a build: it started
    assert deploy.get_attribute("data-status") in ("running", "success")
    page.locator("li.job[data-job=deploy][data-status=success]").wait_for(timeout=30_000)
    page.locator("#wf h2 .status", has_text="success").wait_for()
    assert page.evaluate("window.__sameDocument") is True  # no reload: the graph refreshed itself
    assert page.locator("#wf button", has_text="Approve").count() == 0
    page.screenshot(path=str(site.shots / "workflow.png"), full_page=True)
    ratios = page.evaluate(CONTRAST_JS)
    low = [r for r in ratios if r[1] < 4.5]
    assert ratios and not low, f"text below 4.5:1 contrast: {low[:5]}"
    workflow = page.url
    page.set_viewport_size({"width": 375, "height": 740})
    try:
        page.goto(workflow)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the workflow page scrolls sideways on a phone by {overflow}px"
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(site.server.base + "/?project=gh/acme/flow")
    assert page.locator("#rows .wfjob", has_text="ship \u203a deploy").count() == 1


# The elements that stick out on the right (what makes a page scroll sideways).
WIDE_JS = """() => [...document.querySelectorAll("body *")]
  .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(-6).map((e) => e.tagName + "." + e.className + " " + Math.round(e.getBoundingClientRect().right))"""

# How many "tick" lines the running Grow step's log shows now.
GROW_TICKS = """(() => {
  const step = [...document.querySelectorAll("details.step")].find((d) => d.textContent.includes("Grow"));
  const log = step && step.querySelector("pre.log[data-running='1']");
  return log ? (log.textContent.match(/tick/g) || []).length : 0;
})()"""

# Contrast of every visible text element against its nearest opaque background (WCAG formula).
CONTRAST_JS = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) { return c.slice(0, 3); }
    }
    return [255, 255, 255];
  };
  const out = [];
  const texts = "a, button, td, th, dt, dd, p, h1, h2, label, summary, span.status";
  for (const el of document.querySelectorAll(texts)) {
    if (!el.offsetParent || !el.textContent.trim()) { continue; }
    const style = getComputedStyle(el);
    const fg = parse(style.color).slice(0, 3), bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    out.push([el.tagName + "." + el.className, Math.round(((hi + 0.05) / (lo + 0.05)) * 100) / 100]);
  }
  return out;
}
"""
