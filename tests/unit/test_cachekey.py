"""Cache key templates (core/cachekey.py), blob key layout (core/blobkeys.py) and file-set rules
(core/filesets.py): table-driven."""

from __future__ import annotations

import base64
import hashlib
from pathlib import PurePosixPath

import pytest

from circlet.core.blobkeys import (
    cache_meta_key,
    cache_part_key,
    cache_search_prefix,
    decode_cache_key,
    encode_cache_key,
    parse_artifact_key,
    parse_cache_meta_key,
)
from circlet.core.cachekey import (
    CHECKOUT_KEY,
    KeyValues,
    TemplateError,
    arch_name,
    checksum_files,
    file_checksum,
    render,
)
from circlet.core.filesets import (
    PathRefused,
    allowed_roots,
    artifact_name,
    destination_prefix,
    display_path,
    workspace_glob,
)

VALUES = KeyValues(
    branch="feature/x",
    build_num=45,
    revision="f" * 40,
    environment={"GOOS": "linux", "EMPTY": ""},
    epoch=1700000000,
    arch="arch1-linux-amd64",
)


def fake_checksum(name: str) -> str:
    return f"sum({name})"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param("v1-deps", "v1-deps", id="literal"),
        pytest.param("v1-{{ .Branch }}", "v1-feature/x", id="branch"),
        pytest.param("v1-{{.Branch}}", "v1-feature/x", id="no-spaces"),
        pytest.param("{{   .BuildNum   }}", "45", id="buildnum-wide-spaces"),
        pytest.param("r-{{ .Revision }}", "r-" + "f" * 40, id="revision"),
        pytest.param("{{ .CheckoutKey }}", CHECKOUT_KEY, id="checkout-key"),
        pytest.param("{{ .Environment.GOOS }}-x", "linux-x", id="environment"),
        pytest.param("[{{ .Environment.NOPE }}]", "[]", id="environment-unset-is-empty"),
        pytest.param("{{ epoch }}", "1700000000", id="epoch"),
        pytest.param("{{ arch }}", "arch1-linux-amd64", id="arch"),
        pytest.param('deps-{{ checksum "go.sum" }}', "deps-sum(go.sum)", id="checksum"),
        pytest.param("deps-{{checksum `a b.lock`}}", "deps-sum(a b.lock)", id="checksum-backquote"),
        pytest.param('{{ checksum "q\\"x" }}', 'sum(q"x)', id="checksum-escaped-quote"),
        pytest.param('a-{{ checksum "x" }}-{{ checksum "y" }}', "a-sum(x)-sum(y)", id="two-checksums"),
        pytest.param("v1 {{- .BuildNum -}} x", "v145x", id="trim-markers"),
        pytest.param("v1-{{ .Branch }}-{{ .Branch }}", "v1-feature/x-feature/x", id="twice"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, VALUES, fake_checksum) == expected


@pytest.mark.parametrize(
    ("template", "words"),
    [
        pytest.param("{{ .Nope }}", "unknown cache key template {{ .Nope }}", id="unknown-field"),
        pytest.param("{{ checksum }}", "unknown cache key template", id="checksum-without-file"),
        pytest.param('{{ checksum "" }}', "checksum needs a file name", id="checksum-empty"),
        pytest.param("{{ .Environment.1X }}", "unknown cache key template", id="bad-env-name"),
        pytest.param("v1-{{ .Branch", "unclosed '{{'", id="unclosed"),
        pytest.param("v1-}}", "'}}' without '{{'", id="stray-close"),
        pytest.param("{{ epoch | printf }}", "unknown cache key template", id="pipelines"),
    ],
)
def test_render_errors_name_the_problem(template: str, words: str) -> None:
    with pytest.raises(TemplateError, match=None) as caught:
        render(template, VALUES, fake_checksum)
    assert words in caught.value.message


def test_a_tag_build_renders_an_empty_branch() -> None:
    tag_values = KeyValues(branch=None, build_num=1, revision="r")
    assert render("v1-{{ .Branch }}-x", tag_values, fake_checksum) == "v1--x"


def test_checksum_files_lists_the_files_in_order() -> None:
    assert checksum_files('{{ checksum "b" }}-{{ .Branch }}-{{checksum `a`}}') == ["b", "a"]


def test_file_checksum_is_base64_of_sha256_with_slashes_replaced() -> None:
    digest = hashlib.sha256(b"\xff" * 7).digest()
    text = file_checksum(digest)
    assert "/" not in text and text.endswith("=")
    assert base64.b64decode(text.replace("_", "/")) == digest


@pytest.mark.parametrize(
    ("system", "machine", "expected"),
    [
        ("Linux", "x86_64", "arch1-linux-amd64"),
        ("Linux", "aarch64", "arch1-linux-arm64"),
        ("Darwin", "arm64", "arch1-darwin-arm64"),
        ("Linux", "riscv64", "arch1-linux-riscv64"),
    ],
)
def test_arch_name(system: str, machine: str, expected: str) -> None:
    assert arch_name(system, machine) == expected


# ---------------------------------------------------------------- blob keys


@pytest.mark.parametrize(
    "key",
    ["v1-deps", "v1/branch/x", "a%2Fb", "ünï cödé", "x" * 450, "@meta.json", "..", "k=+/="],
    ids=["plain", "slashes", "percent", "unicode", "long", "at-sign", "dotdot", "base64-chars"],
)
def test_cache_keys_round_trip_and_keep_prefixes(key: str) -> None:
    meta = cache_meta_key(3, key)
    assert parse_cache_meta_key(3, meta) == key
    assert decode_cache_key(encode_cache_key(key)) == key
    for cut in range(len(key) + 1):
        assert meta.startswith(cache_search_prefix(3, key[:cut]))
    assert parse_cache_meta_key(3, cache_part_key(3, key, "42-0", 0)) is None
    assert parse_cache_meta_key(4, meta) is None


def test_artifact_keys_parse_back() -> None:
    assert parse_artifact_key("artifacts/12/3/a/b c.txt") == (3, "a/b c.txt")
    assert parse_artifact_key("artifacts/12/x/a") is None
    assert parse_artifact_key("caches/12/3/a") is None


# ---------------------------------------------------------------- file sets

HOME = PurePosixPath("/data/ws/42/node0/home")


@pytest.mark.parametrize(
    ("file", "stored", "destination", "single", "expected"),
    [
        pytest.param(
            HOME / "project/out/a.log", HOME / "project/out", "", False, "project/out/a.log", id="home"
        ),
        pytest.param(
            PurePosixPath("/tmp/art/a.log"), PurePosixPath("/tmp/art"), "", False, "tmp/art/a.log", id="abs"
        ),
        pytest.param(
            HOME / "project/out/s/a", HOME / "project/out", "d", False, "d/s/a", id="destination-dir"
        ),
        pytest.param(
            HOME / "project/r.html", HOME / "project/r.html", "d/e", True, "d/e/r.html", id="dest-file"
        ),
    ],
)
def test_artifact_name(
    file: PurePosixPath, stored: PurePosixPath, destination: str, single: bool, expected: str
) -> None:
    assert artifact_name(file, stored, home=HOME, destination=destination, single_file=single) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, ""), ("", ""), (".", ""), ("/a/./b/", "a/b"), ("a\\b", "a/b"), ("x", "x")],
)
def test_destination_prefix(raw: str | None, expected: str) -> None:
    assert destination_prefix(raw) == expected


def test_destination_prefix_refuses_dotdot() -> None:
    with pytest.raises(PathRefused):
        destination_prefix("a/../../b")


def test_display_path_of_home_itself_is_absolute() -> None:
    assert display_path(HOME, HOME) == HOME.as_posix().lstrip("/")


@pytest.mark.parametrize(
    ("node", "workdir", "expected"),
    [
        pytest.param("/d/ws/1/node0", "/d/ws/1/node0/home/project", ["/d/ws/1/node0"], id="default"),
        pytest.param("/d/ws/1/node0", "/go/src/x", ["/d/ws/1/node0", "/go/src/x"], id="absolute-workdir"),
        pytest.param("/d/ws/1/node0", "/", ["/d/ws/1/node0"], id="root-is-not-the-builds"),
        pytest.param("/d/ws/1/node0", "/d/ws", ["/d/ws/1/node0"], id="other-builds-are-not-the-builds"),
    ],
)
def test_allowed_roots(node: str, workdir: str, expected: list[str]) -> None:
    roots = allowed_roots(PurePosixPath(node), PurePosixPath(workdir))
    assert [r.as_posix() for r in roots] == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (".", "."),
        ("dist", "dist"),
        ("*.txt", "*.txt"),
        ("a/[^x]?", "a/[!x]?"),
        ("a\\*b", "a[*]b"),
        ("bin/[a-c]*", "bin/[a-c]*"),
    ],
)
def test_workspace_glob(pattern: str, expected: str) -> None:
    assert workspace_glob(pattern) == expected


@pytest.mark.parametrize("pattern", ["/abs", "../up", "a/../../b", "", "a/[b"])
def test_workspace_glob_refuses(pattern: str) -> None:
    with pytest.raises(PathRefused):
        workspace_glob(pattern)
