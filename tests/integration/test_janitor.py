"""Expired blobs are deleted from a real filesystem blob store (janitor.py), by hand and by
`circlet blobs prune`; fresh ones and other kinds stay."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from circlet.cli import main
from circlet.core.blobkeys import artifact_key, cache_meta_key, cache_parts_prefix
from circlet.core.retention import RetentionPolicy
from circlet.janitor import BlobJanitor
from circlet.store.blobs_fs import FileBlobStore

DAY = 86400.0


def put(store: FileBlobStore, key: str, days_old: float, data: bytes = b"x" * 10) -> None:
    store.put(key, io.BytesIO(data))
    path = store.root / "objects" / key
    assert path.is_file(), "the filesystem store's layout changed: update this test"
    then = time.time() - days_old * DAY
    os.utime(path, (then, then))


def fill(store: FileBlobStore) -> None:
    put(store, artifact_key(1, 0, "old/report.html"), 31)
    put(store, artifact_key(2, 0, "new.txt"), 1)
    put(store, cache_parts_prefix(7, "v1-old", "1-0") + "0.tar", 17)
    put(store, cache_meta_key(7, "v1-old"), 16)
    put(store, cache_parts_prefix(7, "v1-new", "2-0") + "0.tar", 2)
    put(store, cache_meta_key(7, "v1-new"), 2)
    put(store, "workspaces/wf-a/1/101-0.tar", 20)
    put(store, "workspaces/wf-b/2/101-0.tar", 1)


def keys(store: FileBlobStore) -> list[str]:
    return [info.key for info in store.list("")]


def test_prune_deletes_what_expired_and_keeps_the_rest(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    fill(store)
    janitor = BlobJanitor(store, RetentionPolicy())

    seen = janitor.prune(dry_run=True)
    assert len(keys(store)) == 8  # a dry run deletes nothing
    done = janitor.prune()

    assert seen == done
    assert done.prefixes == ("artifacts/1/", "caches/7/v1-old/", "workspaces/wf-a/")
    assert keys(store) == [
        artifact_key(2, 0, "new.txt"),
        cache_meta_key(7, "v1-new"),
        cache_parts_prefix(7, "v1-new", "2-0") + "0.tar",
        "workspaces/wf-b/2/101-0.tar",
    ]
    assert janitor.prune().prefixes == ()  # nothing left to do


def test_the_command_prunes_the_servers_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCLET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CIRCLET_CACHE_DAYS", "0")  # caches kept for ever here
    store = FileBlobStore(tmp_path / "data" / "blobs")
    fill(store)
    runner = CliRunner()

    dry = runner.invoke(main, ["blobs", "prune", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "artifacts/1/" in dry.output and "expired (not deleted: --dry-run)" in dry.output
    assert len(keys(store)) == 8

    result = runner.invoke(main, ["blobs", "prune"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "artifacts/1/",
        "workspaces/wf-a/",
        "2 units, 2 blobs, 20 bytes deleted",
    ]
    assert cache_meta_key(7, "v1-old") in keys(store)
