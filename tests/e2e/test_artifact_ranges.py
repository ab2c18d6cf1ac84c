"""Artifact downloads resume: HEAD and byte Range requests against a real `circlet serve` (the
filesystem blob store, a real build storing real files), checked byte for byte; and a real
`curl -C -` finishing a partial download."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from circlet.harness import ServerProcess, commit_files, config_yaml, make_repo

pytestmark = pytest.mark.timeout(180)

P = "/api/v1.1/project/gh/acme/widget"
MIB = 1 << 20
BIG = random.Random(7).randbytes(3 * MIB + 12345)  # crosses the server's 1 MiB read size
NOTES = b"hello, ranges\n"

STEPS: list[str | dict[str, Any]] = [
    "checkout",
    {
        "run": "mkdir -p out && cp big.bin out/ && printf 'hello, ranges\\n' > out/notes.txt"
        " && : > out/empty.bin"
    },
    {"store_artifacts": {"path": "out", "destination": "d"}},
]


class Live:
    def __init__(self, srv: ServerProcess, urls: dict[str, str]) -> None:
        self.srv = srv
        self.urls = urls  # artifact path -> its signed URL

    def get(self, name: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.get(self.urls[name], headers=headers, timeout=30)

    def head(self, name: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.head(self.urls[name], headers=headers, timeout=30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("ranges")
    repo = root / "widget"
    make_repo(repo, {".circleci/config.yml": config_yaml(STEPS)})
    (repo / "big.bin").write_bytes(BIG)
    commit_files(repo, {}, message="a big file")
    srv = ServerProcess(root / "data", slots=2)
    with srv:
        srv.cli("project", "add", "gh/acme/widget", "--repo", str(repo))
        srv.make_token()
        with httpx.Client(base_url=srv.base, headers={"Circle-Token": srv.token}, timeout=30) as http:
            number = http.post(P + "/tree/main").json()["build_num"]
            deadline = time.monotonic() + 90
            while (build := http.get(f"{P}/{number}").json())["lifecycle"] != "finished":
                assert time.monotonic() < deadline, "the build did not finish"
                time.sleep(0.1)
            assert build["outcome"] == "success", build
            listed = http.get(f"{P}/{number}/artifacts").json()
        yield Live(srv, {a["path"]: a["url"] for a in listed})


def test_a_whole_download_advertises_ranges_and_validators(live: Live) -> None:
    answer = live.get("d/big.bin")
    assert answer.status_code == 200 and answer.content == BIG
    assert answer.headers["accept-ranges"] == "bytes"
    assert answer.headers["content-length"] == str(len(BIG))
    assert answer.headers["etag"].startswith('"') and answer.headers["etag"].endswith('"')
    assert answer.headers["last-modified"].endswith(" GMT")
    assert "content-range" not in answer.headers
    empty = live.get("d/empty.bin")
    assert empty.status_code == 200 and empty.content == b"" and empty.headers["accept-ranges"] == "bytes"


N = len(BIG)


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        pytest.param("bytes=0-0", 0, 1, id="first-byte"),
        pytest.param("bytes=0-99", 0, 100, id="head"),
        pytest.param(f"bytes={MIB - 5}-{2 * MIB + 4}", MIB - 5, 2 * MIB + 5, id="across-chunks"),
        pytest.param(f"bytes={N - 10}-{N + 1000}", N - 10, N, id="end-past-size-clipped"),
        pytest.param(f"bytes={N - 1}-", N - 1, N, id="last-byte-open"),
        pytest.param(f"bytes={MIB + 3}-", MIB + 3, N, id="open-ended"),
        pytest.param("bytes=0-", 0, N, id="open-from-zero"),
        pytest.param("bytes=-1", N - 1, N, id="suffix-one"),
        pytest.param("bytes=-1500000", N - 1500000, N, id="suffix"),
        pytest.param(f"bytes=-{N + 7}", 0, N, id="suffix-longer-than-file"),
        pytest.param("Bytes = 10-19", 10, 20, id="unit-any-case-spaces"),
        pytest.param("bytes=5-9,", 5, 10, id="empty-list-element"),
        pytest.param("bytes=00012-0000000000000000000000000000000000099", 12, 100, id="leading-zeros"),
    ],
)
def test_a_single_range_gets_206_with_exactly_those_bytes(
    live: Live, header: str, start: int, stop: int
) -> None:
    answer = live.get("d/big.bin", {"Range": header})
    assert answer.status_code == 206, answer.text[:200]
    assert answer.content == BIG[start:stop]
    assert answer.headers["content-range"] == f"bytes {start}-{stop - 1}/{N}"
    assert answer.headers["content-length"] == str(stop - start)
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["accept-ranges"] == "bytes"
    assert answer.headers["content-security-policy"] == "sandbox"


def test_a_text_artifact_keeps_its_type_in_a_range(live: Live) -> None:
    answer = live.get("d/notes.txt", {"Range": "bytes=7-"})
    assert answer.status_code == 206 and answer.content == b"ranges\n"
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["content-range"] == f"bytes 7-{len(NOTES) - 1}/{len(NOTES)}"


@pytest.mark.parametrize(
    ("name", "header"),
    [
        pytest.param("d/big.bin", f"bytes={N}-", id="start-at-size"),
        pytest.param("d/big.bin", f"bytes={N + 5}-{N + 10}", id="start-past-size"),
        pytest.param("d/big.bin", "bytes=" + "9" * 40 + "-", id="huge-start"),
        pytest.param("d/big.bin", "bytes=-0", id="empty-suffix"),
        pytest.param("d/empty.bin", "bytes=0-", id="empty-file"),
        pytest.param("d/empty.bin", "bytes=-5", id="empty-file-suffix"),
    ],
)
def test_an_unsatisfiable_range_gets_416_with_the_size(live: Live, name: str, header: str) -> None:
    size = len(BIG) if name == "d/big.bin" else 0
    answer = live.get(name, {"Range": header})
    assert answer.status_code == 416
    assert answer.headers["content-range"] == f"bytes */{size}"
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"message": f"Range not satisfiable: the artifact is {size} bytes long"}
    head = live.head(name, {"Range": header})
    assert head.status_code == 416 and head.content == b""
    assert head.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("bytes=0-1,5-9", id="two-ranges"),
        pytest.param("bytes=9-3", id="last-before-first"),
        pytest.param("bytes=abc", id="no-dash"),
        pytest.param("bytes=a-5", id="letters"),
        pytest.param("bytes=-", id="only-dash"),
        pytest.param("bytes=", id="empty"),
        pytest.param("bytes=1 -5", id="space-inside"),
        pytest.param("bytes=-0x10", id="hex"),
        pytest.param("items=0-5", id="other-unit"),
        pytest.param("0-5", id="no-unit"),
        pytest.param("bytes=\u0661-2", id="non-ascii-digit"),
    ],
)
def test_a_malformed_or_multiple_range_is_ignored(live: Live, header: str) -> None:
    answer = httpx.get(live.urls["d/big.bin"], headers={"Range": header.encode()}, timeout=30)
    assert answer.status_code == 200
    assert answer.content == BIG
    assert "content-range" not in answer.headers
    assert answer.headers["content-length"] == str(N)


def test_if_range_honours_the_range_only_for_the_same_version(live: Live) -> None:
    whole = live.head("d/big.bin")
    etag, modified = whole.headers["etag"], whole.headers["last-modified"]
    for current in (etag, modified):
        answer = live.get("d/big.bin", {"Range": "bytes=100-199", "If-Range": current})
        assert answer.status_code == 206 and answer.content == BIG[100:200], current
    other_tag = etag[:-2] + ("0" if etag[-2] != "0" else "1") + '"'
    for stale in (other_tag, "W/" + etag, "Thu, 01 Jan 1970 00:00:00 GMT", "not a date"):
        answer = live.get("d/big.bin", {"Range": "bytes=100-199", "If-Range": stale})
        assert answer.status_code == 200 and answer.content == BIG, stale
        assert "content-range" not in answer.headers
    # a stale If-Range also makes an unsatisfiable range moot: the whole (new) file
    answer = live.get("d/big.bin", {"Range": f"bytes={N}-", "If-Range": other_tag})
    assert answer.status_code == 200 and len(answer.content) == N


def test_head_answers_the_headers_of_get_without_a_body(live: Live) -> None:
    for name, body in (("d/big.bin", BIG), ("d/notes.txt", NOTES), ("d/empty.bin", b"")):
        got, head = live.get(name), live.head(name)
        assert head.status_code == 200 and head.content == b""
        for header in (
            "content-length",
            "content-type",
            "accept-ranges",
            "etag",
            "last-modified",
            "x-content-type-options",
            "content-security-policy",
        ):
            assert head.headers[header] == got.headers[header], (name, header)
        assert head.headers["content-length"] == str(len(body))
    part = live.head("d/big.bin", {"Range": "bytes=-10"})
    assert part.status_code == 206 and part.content == b""
    assert part.headers["content-length"] == "10"
    assert part.headers["content-range"] == f"bytes {N - 10}-{N - 1}/{N}"


def test_head_sends_no_body_on_the_wire(live: Live) -> None:
    url = urlsplit(live.urls["d/big.bin"])
    with socket.create_connection((url.hostname or "", url.port or 80), timeout=30) as sock:
        request = f"HEAD {url.path}?{url.query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode("latin-1"))
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and f"content-length: {N}".encode() in head.lower()
    assert rest == b""


def test_head_takes_the_same_auth_as_get(live: Live) -> None:
    srv = live.srv
    url = live.urls["d/big.bin"]
    bare = srv.base + urlsplit(url).path
    assert httpx.head(bare, timeout=30).status_code == 404  # private project, no token
    assert httpx.get(bare, headers={"Range": "bytes=0-1"}, timeout=30).status_code == 404
    with_token = httpx.head(bare, headers={"Circle-Token": srv.token}, timeout=30)
    assert with_token.status_code == 200 and with_token.headers["content-length"] == str(N)
    assert httpx.head(bare, params={"circle-token": srv.token}, timeout=30).status_code == 200
    assert httpx.head(url.replace("&sig=", "&sig=A"), timeout=30).status_code == 404  # forged
    missing = bare.rsplit("/", 1)[0] + "/nothing.bin"
    assert httpx.head(missing, headers={"Circle-Token": srv.token}, timeout=30).status_code == 404
    answer = httpx.get(missing, headers={"Circle-Token": srv.token, "Range": "bytes=0-1"}, timeout=30)
    assert answer.status_code == 404 and answer.json() == {"message": "Artifact not found"}


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_resumes_a_partial_download_into_an_identical_file(live: Live, tmp_path: Path) -> None:
    url = live.urls["d/big.bin"]
    target = tmp_path / "big.bin"
    cut = MIB + 777  # as if the first download had died here
    first = subprocess.run(
        ["curl", "-sS", "-f", "-r", f"0-{cut - 1}", "-o", str(target), url],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert target.read_bytes() == BIG[:cut]
    headers = tmp_path / "headers.txt"
    resumed = subprocess.run(
        ["curl", "-sS", "-f", "-C", "-", "-D", str(headers), "-o", str(target), url],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    sent = headers.read_text().lower()
    assert sent.startswith("http/1.1 206") and f"content-range: bytes {cut}-{N - 1}/{N}" in sent
    assert target.read_bytes() == BIG
