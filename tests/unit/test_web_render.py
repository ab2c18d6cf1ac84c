"""The web page's pure parts: terminal output to HTML, cookie and redirect helpers, view helpers
(server-side sessions: tests/unit/test_web_sessions.py and tests/e2e/test_web_sessions.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from circlet.core.model import Action, ActionStatus
from circlet.http.web.ansi import AnsiHtml, nearest16, render, to16
from circlet.http.web.session import safe_next, secure_cookies
from circlet.http.web.views import duration, since, step_views, tone
from circlet.wire import Links

AT = datetime(2024, 5, 1, 12, 0, 3, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "html"),
    [
        pytest.param(b"plain\n", "plain\n", id="plain"),
        pytest.param(b"<b>&\"'\n", "&lt;b&gt;&amp;\"'\n", id="escaped"),
        pytest.param(b"\x1b[31mred\x1b[0m ok", '<span class="fg1">red</span> ok', id="basic-colour"),
        pytest.param(
            b"\x1b[1;92mB\x1b[22mN",
            '<span class="fg10 b">B</span><span class="fg10">N</span>',
            id="bold-bright",
        ),
        pytest.param(b"\x1b[38;5;196mX", '<span class="fg9">X</span>', id="256-to-16"),
        pytest.param(
            b"\x1b[38;2;1;2;3mX\x1b[4mY",
            '<span class="fg0">X</span><span class="fg0 u">Y</span>',
            id="truecolour-dark",
        ),
        pytest.param(b"\x1b[38;2;255;135;0mX", '<span class="fg11">X</span>', id="truecolour-fg"),
        pytest.param(b"\x1b[48;2;0;0;128;1mX", '<span class="bg4 b">X</span>', id="truecolour-bg-then-bold"),
        pytest.param(b"\x1b[38:2::255:0:0mX", '<span class="fg9">X</span>', id="truecolour-colons"),
        pytest.param(b"\x1b[38:2:0:205:0mX", '<span class="fg2">X</span>', id="truecolour-colons-no-space"),
        pytest.param(b"\x1b[38:5:196mX", '<span class="fg9">X</span>', id="256-colons"),
        pytest.param(b"\x1b[38;2;300;0;0mX", "X", id="truecolour-out-of-range"),
        pytest.param(b"\x1b[38;2;9mX", "X", id="truecolour-truncated"),
        pytest.param(b"\x1b[58;5;31mX", "X", id="underline-colour-ignored"),
        pytest.param(b"\x1b[4:3mX\x1b[4:0mY", '<span class="u">X</span>Y', id="underline-styles"),
        pytest.param(
            b"\x1b[31m\x1b[38;2;0;95;135mX\x1b[39mY", '<span class="fg6">X</span>Y', id="truecolour-replaces"
        ),
        pytest.param(
            b"\x1b[44;37mX\x1b[49mY", '<span class="fg7 bg4">X</span><span class="fg7">Y</span>', id="bg"
        ),
        pytest.param(b"a\x1b[2Kb\x1b[1Gc", "abc", id="cursor-dropped"),
        pytest.param(b"\x1b]0;title\x07text", "text", id="osc-dropped"),
        pytest.param(b"10%\r20%\r\n", "10%\n20%\n", id="carriage-returns"),
        pytest.param(b"\x00\x07bell\x08", "bell", id="controls-dropped"),
        pytest.param(b"\xff\xfe!", "\ufffd\ufffd!", id="bad-utf8"),
        pytest.param(b"\x1b[31m<script>", '<span class="fg1">&lt;script&gt;</span>', id="coloured-markup"),
    ],
)
def test_render(raw: bytes, html: str) -> None:
    assert render(raw) == html


@pytest.mark.parametrize("cut", range(1, 44))
def test_pieces_render_like_the_whole(cut: int) -> None:
    whole = "\x1b[1;31mé\x1b[0m ok\n\x1b[32mgreen\n\x1b[38:2::0:95:135mteal\n".encode()
    converter = AnsiHtml()
    pieces = converter.feed(whole[:cut]) + converter.feed(whole[cut:]) + converter.finish()
    assert _cells(pieces) == _cells(render(whole))  # a cut inside a run may split its span


def _cells(html: str) -> list[tuple[str, str]]:
    """Each character shown with its classes (what a reader sees, whatever the spans)."""
    return [
        (m.group(1) or "", c)
        for m in re.finditer(r'<span class="([^"]*)">([^<]*)</span>|([^<]+)', html)
        for c in (m.group(2) if m.group(1) is not None else m.group(3))
    ]


def test_lines_get_hidden_timestamps() -> None:
    html = render(b"one\n\ntwo", AT)
    stamp = '<span class="ts" data-t="2024-05-01T12:00:03.123000+00:00">12:00:03.123 </span>'
    assert html == f"{stamp}one\n{stamp}\n{stamp}two"


def test_a_window_starting_mid_line_has_no_stamp_first() -> None:
    converter = AnsiHtml(at_line_start=False)
    assert converter.feed(b"rest\nnext", AT).startswith('rest\n<span class="ts"')


@pytest.mark.parametrize(
    ("colour", "basic"), [(0, 0), (15, 15), (16, 0), (196, 9), (46, 10), (21, 12), (244, 7), (300, None)]
)
def test_to16(colour: int, basic: int | None) -> None:
    assert to16(colour) == basic


@pytest.mark.parametrize(
    ("rgb", "basic"),
    [
        ((0, 0, 0), 0),
        ((46, 52, 64), 0),  # a dark grey-blue is a grey
        ((80, 80, 80), 8),
        ((128, 128, 128), 8),
        ((229, 229, 229), 7),
        ((255, 255, 255), 15),
        ((205, 0, 0), 1),
        ((255, 0, 0), 9),
        ((60, 0, 0), 1),  # dark, but red
        ((206, 145, 120), 1),  # salmon
        ((255, 182, 193), 9),  # pink
        ((255, 135, 0), 11),  # orange
        ((220, 220, 170), 3),  # khaki
        ((0, 128, 0), 2),
        ((64, 160, 43), 2),
        ((0, 95, 135), 6),  # a muted teal keeps its hue
        ((0, 205, 205), 6),
        ((0, 0, 128), 4),
        ((92, 92, 255), 12),
        ((128, 0, 128), 5),
        ((255, 0, 128), 13),
        ((256, 0, 0), None),
        ((0, -1, 0), None),
    ],
)
def test_nearest16(rgb: tuple[int, int, int], basic: int | None) -> None:
    assert nearest16(*rgb) == basic


@pytest.mark.parametrize("n", range(16, 232))
def test_24_bit_agrees_with_the_256_palette_on_its_pure_hues(n: int) -> None:
    """The cube colours whose channels are 0 or 255-ish map the same way by either path."""
    red, rest = divmod(n - 16, 36)
    green, blue = divmod(rest, 6)
    if {red, green, blue} <= {0, 5} and (red, green, blue) != (0, 0, 0):
        levels = [0 if c == 0 else 255 for c in (red, green, blue)]
        assert nearest16(*levels) == to16(n)


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/gh/a/b/1", "/gh/a/b/1"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil", "/"),
        ("/\t/evil.example", "/"),  # browsers drop the tab: //evil.example
        ("/\n/evil.example", "/"),
        ("/gh/a/b/1\x7f", "/"),
        ("relative", "/"),
    ],
)
def test_safe_next(target: str | None, safe: str) -> None:
    assert safe_next(target) == safe


@pytest.mark.parametrize(
    ("millis", "text"),
    [(None, ""), (0, "0ms"), (999, "999ms"), (12_400, "12s"), (185_000, "3m 05s"), (3_720_000, "1h 02m")],
)
def test_duration(millis: int | None, text: str) -> None:
    assert duration(millis) == text


def test_since() -> None:
    assert since(AT - timedelta(seconds=10), AT) == "just now"
    assert since(AT - timedelta(minutes=5), AT) == "5 min ago"
    assert since(AT - timedelta(days=30), AT) == "2024-04-01"


@pytest.mark.parametrize(
    ("status", "family"),
    [
        ("success", "ok"),
        ("fixed", "ok"),
        ("failed", "bad"),
        ("infrastructure_fail", "bad"),
        ("running", "run"),
        ("not_running", "wait"),
        ("queued", "wait"),
        ("on_hold", "hold"),
        ("canceled", "off"),
        ("not_run", "off"),
        ("whatever", "off"),
    ],
)
def test_tone(status: str, family: str) -> None:
    assert tone(status) == family


def _action(step: int, status: ActionStatus, index: int = 0) -> Action:
    end = None if status is ActionStatus.RUNNING else AT
    return Action(step=step, index=index, name=f"s{step}", status=status, start_time=AT, end_time=end)


@pytest.mark.parametrize(
    ("statuses", "ended", "shown", "opened"),
    [
        pytest.param([ActionStatus.SUCCESS], None, "success", False, id="passed-closed"),
        pytest.param([ActionStatus.FAILED], "failed", "failed", True, id="failed-open"),
        pytest.param([ActionStatus.RUNNING], None, "running", True, id="running-open"),
        pytest.param(
            [ActionStatus.RUNNING], "infrastructure_fail", "infrastructure_fail", True, id="dead-runner"
        ),
        pytest.param([ActionStatus.RUNNING], "canceled", "canceled", False, id="canceled-under-it"),
        pytest.param(
            [ActionStatus.SUCCESS, ActionStatus.TIMEDOUT], "timedout", "timedout", True, id="worst-wins"
        ),
    ],
)
def test_step_views(statuses: list[ActionStatus], ended: str | None, shown: str, opened: bool) -> None:
    actions = tuple(_action(101, status, index) for index, status in enumerate(statuses))
    (step,) = step_views(actions, AT + timedelta(seconds=5), ended=ended)
    assert (step.status, step.open) == (shown, opened)
    assert all(not a.running for a in step.actions) or ended is None


@pytest.mark.parametrize(
    ("scheme", "base_url", "forwarded", "client", "secure"),
    [
        pytest.param("http", "http://127.0.0.1:8080", "", "127.0.0.1", False, id="plain-loopback"),
        pytest.param("https", "http://127.0.0.1:8080", "", "10.0.0.5", True, id="https-request"),
        pytest.param("http", "https://ci.example", "", "10.0.0.5", True, id="https-base-url"),
        pytest.param("http", "http://127.0.0.1:8080", "https", "127.0.0.1", True, id="local-tls-proxy"),
        pytest.param("http", "http://127.0.0.1:8080", "https", "10.0.0.5", False, id="forwarded-from-afar"),
    ],
)
def test_secure_cookies(scheme: str, base_url: str, forwarded: str, client: str, secure: bool) -> None:
    app = SimpleNamespace(state=SimpleNamespace(services=SimpleNamespace(links=Links(base_url, b"k"))))
    headers = [(b"x-forwarded-proto", forwarded.encode())] if forwarded else []
    scope = {
        "type": "http",
        "scheme": scheme,
        "headers": headers,
        "app": app,
        "path": "/",
        "server": ("127.0.0.1", 8080),
        "client": (client, 5000),
        "query_string": b"",
    }
    assert secure_cookies(Request(scope)) is secure
