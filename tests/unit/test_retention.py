"""Which blobs have expired (core/retention.py): table-driven, on BlobInfo values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from circlet.core.blobkeys import artifact_key, cache_meta_key, cache_parts_prefix
from circlet.core.blobs import BlobInfo
from circlet.core.retention import Expired, RetentionPolicy, expired

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
DEFAULT = RetentionPolicy()  # artifacts 30 days, caches and workspaces 15


def blob(key: str, days_old: float, size: int = 10) -> BlobInfo:
    return BlobInfo(key=key, size=size, created_at=NOW - timedelta(days=days_old))


def cache(
    project: int, key: str, days_old: float, saver: str = "5-0", parts_age: float | None = None
) -> list[BlobInfo]:
    age = days_old if parts_age is None else parts_age
    return [
        blob(cache_parts_prefix(project, key, saver) + "0.tar", age + 0.001, size=100),
        blob(cache_meta_key(project, key), days_old),
    ]


LONG = "k" * 200  # an encoded key of exactly one 200-character segment...
LONGER = LONG + "-more"  # ... and a longer key whose first segment is that one


@pytest.mark.parametrize(
    ("blobs", "policy", "prefixes"),
    [
        pytest.param([], DEFAULT, (), id="empty"),
        pytest.param(
            [blob(artifact_key(1, 0, "a.txt"), 31), blob(artifact_key(1, 1, "b/c.txt"), 40)],
            DEFAULT,
            ("artifacts/1/",),
            id="a-build's-artifacts-go-together",
        ),
        pytest.param(
            [blob(artifact_key(1, 0, "old.txt"), 45), blob(artifact_key(1, 0, "new.txt"), 29)],
            DEFAULT,
            (),
            id="never-half-a-build's-artifacts",
        ),
        pytest.param(
            [blob(artifact_key(1, 0, "a"), 31), blob(artifact_key(12, 0, "a"), 1)],
            DEFAULT,
            ("artifacts/1/",),
            id="build-1-is-not-a-prefix-of-build-12",
        ),
        pytest.param(cache(7, "v1-deps", 16), DEFAULT, ("caches/7/v1-deps/",), id="expired-cache"),
        pytest.param(cache(7, "v1-deps", 14), DEFAULT, (), id="fresh-cache"),
        pytest.param(
            cache(7, "v1-deps", 14, parts_age=20), DEFAULT, (), id="a-cache's-age-is-its-save-not-its-parts"
        ),
        pytest.param(
            [blob(cache_parts_prefix(7, "v1-x", "9-0") + "0.tar", 2)],
            DEFAULT,
            ("caches/7/v1-x/@parts/9-0/",),
            id="parts-of-a-save-that-died",
        ),
        pytest.param(
            [blob(cache_parts_prefix(7, "v1-x", "9-0") + "0.tar", 0.5)],
            DEFAULT,
            (),
            id="parts-of-a-save-under-way",
        ),
        pytest.param(
            cache(7, LONG, 20) + cache(7, LONGER, 1),
            DEFAULT,
            (),
            id="a-folder-holding-a-fresh-longer-key-stays",
        ),
        pytest.param(
            cache(7, LONG, 20) + cache(7, LONGER, 16),
            DEFAULT,
            (f"caches/7/{LONG}/",),
            id="...and-goes-with-it",
        ),
        pytest.param(
            [blob("workspaces/wf-1/5/101-0.tar", 16), blob("workspaces/wf-1/6/101-0.tar", 16)],
            DEFAULT,
            ("workspaces/wf-1/",),
            id="a-workflow's-workspace",
        ),
        pytest.param(
            [blob("workspaces/wf-1/5/101-0.tar", 16), blob("workspaces/wf-1/6/101-0.tar", 3)],
            DEFAULT,
            (),
            id="a-workflow-still-adding-layers",
        ),
        pytest.param(
            [blob(artifact_key(1, 0, "a"), 400), *cache(7, "k", 400), blob("workspaces/w/1/1-0.tar", 400)],
            RetentionPolicy(artifact_days=0, cache_days=0, workspace_days=0),
            (),
            id="zero-keeps-for-ever",
        ),
        pytest.param([blob("elsewhere/file", 999), blob("artifacts/x", 999)], DEFAULT, (), id="unknown-kept"),
        pytest.param(
            [*cache(7, "k", 20), blob("caches/7/k/notes.txt", 1)],
            DEFAULT,
            (),
            id="a-fresh-unknown-blob-keeps-its-cache-folder",
        ),
    ],
)
def test_expired(blobs: list[BlobInfo], policy: RetentionPolicy, prefixes: tuple[str, ...]) -> None:
    assert expired(blobs, NOW, policy).prefixes == prefixes


def test_counts_what_goes() -> None:
    blobs = [blob(artifact_key(1, 0, "a"), 31, size=5), blob(artifact_key(1, 0, "b"), 31, size=7)]
    blobs += cache(7, "v1", 16)  # 100 + 10 bytes
    blobs += [blob(artifact_key(2, 0, "kept"), 1, size=1000)]

    assert expired(blobs, NOW, DEFAULT) == Expired(
        prefixes=("artifacts/1/", "caches/7/v1/"), blobs=4, bytes=122
    )
