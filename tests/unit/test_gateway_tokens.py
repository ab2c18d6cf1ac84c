"""Worker and build tokens of the runner gateway (remote/tokens.py): table of tokens -> verdict."""

from __future__ import annotations

import pytest

from circlet.remote import tokens

SECRET = b"k" * 32
NOW = 1_800_000_000.0
GOOD = tokens.issue_build_token(SECRET, 7, NOW)


@pytest.mark.parametrize(
    ("token", "build_id", "now", "valid"),
    [
        (GOOD, 7, NOW, True),
        (GOOD, 8, NOW, False),  # another build's
        (GOOD, 7, NOW + tokens.BUILD_TOKEN_LIFETIME + 1, False),  # expired
        (tokens.issue_build_token(b"other", 7, NOW), 7, NOW, False),  # another server's
        (GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1"), 7, NOW, False),  # tampered signature
        (GOOD + "é", 7, NOW, False),  # not ASCII: refused, not a crash of compare_digest
        ("7." + GOOD.split(".", 1)[1].replace(".", "é.", 1), 7, NOW, False),
        ("", 7, NOW, False),
        ("7..x", 7, NOW, False),
        ("7.1.2.3", 7, NOW, False),
    ],
)
def test_build_tokens(token: str, build_id: int, now: float, valid: bool) -> None:
    assert tokens.verify_build_token(SECRET, token, build_id, now) is valid


@pytest.mark.parametrize(
    ("expected", "given", "same"),
    [("s3cret", "s3cret", True), ("s3cret", "s3cre", False), ("s3cret", None, False), ("", "", False),
     ("s3cret", "s3crét", False)],
)  # fmt: skip
def test_worker_token_comparison(expected: str, given: str | None, same: bool) -> None:
    assert tokens.same_secret(expected, given) is same


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer ", None), (None, None)],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert tokens.bearer(header) == token
