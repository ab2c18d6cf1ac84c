"""One contract for every BlobStore: the in-memory fake and FileBlobStore (an S3 or HTTP adapter
joins the `blobs` fixture's params and must pass the same tests)."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from circlet.core.blobs import BlobNotFound, BlobStore, InvalidBlobKey, check_key
from circlet.store.blobs_fs import FileBlobStore
from circlet.testing.blobs import InMemoryBlobStore

MiB = 1 << 20


@pytest.fixture(params=["memory", "file"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "memory":
        return InMemoryBlobStore()
    return FileBlobStore(tmp_path / "blobs")


def _read(blobs: BlobStore, key: str) -> bytes:
    with blobs.open(key) as stream:
        return stream.read()


def test_put_then_open_stat_and_list_give_the_bytes_back(blobs: BlobStore) -> None:
    info = blobs.put("artifacts/1/0/out/a.txt", io.BytesIO(b"hello"))
    assert (info.key, info.size) == ("artifacts/1/0/out/a.txt", 5)
    assert _read(blobs, "artifacts/1/0/out/a.txt") == b"hello"
    assert blobs.stat("artifacts/1/0/out/a.txt") == info
    assert blobs.list("artifacts/1/") == [info]
    assert blobs.stat("artifacts/1/0/out/b.txt") is None


def test_put_replaces_and_an_open_reader_keeps_the_old_bytes(blobs: BlobStore) -> None:
    blobs.put("k/v", io.BytesIO(b"old"))
    reader = blobs.open("k/v")
    blobs.put("k/v", io.BytesIO(b"newer"))
    with reader:
        assert reader.read() == b"old"
    assert _read(blobs, "k/v") == b"newer"
    assert blobs.stat("k/v").size == 5  # type: ignore[union-attr]


def test_put_if_absent_commits_once_and_never_touches_the_first(blobs: BlobStore) -> None:
    first = blobs.put_if_absent("caches/1/key/@meta.json", io.BytesIO(b"first"))
    assert first is not None and first.size == 5
    assert blobs.put_if_absent("caches/1/key/@meta.json", io.BytesIO(b"second")) is None
    assert _read(blobs, "caches/1/key/@meta.json") == b"first"


def test_concurrent_put_if_absent_has_exactly_one_winner(blobs: BlobStore) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def attempt(n: int) -> None:
        won = blobs.put_if_absent("race/key", io.BytesIO(str(n).encode() * 10_000)) is not None
        with lock:
            results.append(won)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    content = _read(blobs, "race/key")
    assert len(set(content)) == 1 and len(content) == 10_000  # one writer's bytes, whole


def test_list_is_a_string_prefix_match_sorted_by_key(blobs: BlobStore) -> None:
    for key in (
        "caches/7/v1-deps-b/@meta.json",
        "caches/7/v1-deps-a/@meta.json",
        "caches/7/v2/@meta.json",
        "caches/70/v1/@meta.json",
        "caches/7/v1-deps-a/@parts/x.tar",
    ):
        blobs.put(key, io.BytesIO(b"x"))
    assert [i.key for i in blobs.list("caches/7/v1-dep")] == [
        "caches/7/v1-deps-a/@meta.json",
        "caches/7/v1-deps-a/@parts/x.tar",
        "caches/7/v1-deps-b/@meta.json",
    ]
    assert [i.key for i in blobs.list("caches/7/")] == [
        "caches/7/v1-deps-a/@meta.json",
        "caches/7/v1-deps-a/@parts/x.tar",
        "caches/7/v1-deps-b/@meta.json",
        "caches/7/v2/@meta.json",
    ]
    assert len(blobs.list("caches/7")) == 5  # no trailing slash: caches/70 too
    assert len(blobs.list("")) == 5
    assert blobs.list("nothing/here/") == []
    assert blobs.list("caches/7/v1-deps-a/@meta.json") == [blobs.stat("caches/7/v1-deps-a/@meta.json")]


def test_created_at_orders_writes(blobs: BlobStore) -> None:
    a = blobs.put("t/a", io.BytesIO(b"1"))
    b = blobs.put("t/b", io.BytesIO(b"2"))
    assert a.created_at.tzinfo is not None and a.created_at <= b.created_at


def test_delete_prefix_takes_whole_segments_only(blobs: BlobStore) -> None:
    for key in ("artifacts/1/0/a", "artifacts/1/1/b/c", "artifacts/12/0/a"):
        blobs.put(key, io.BytesIO(b"x"))
    assert blobs.delete_prefix("artifacts/1/") == 2
    assert [i.key for i in blobs.list("artifacts/")] == ["artifacts/12/0/a"]
    assert blobs.delete_prefix("artifacts/1/") == 0  # idempotent
    with pytest.raises(InvalidBlobKey):
        blobs.delete_prefix("artifacts/1")
    blobs.put("artifacts/1/0/again", io.BytesIO(b"y"))  # the prefix can be written again
    assert _read(blobs, "artifacts/1/0/again") == b"y"


def test_missing_blob_is_blob_not_found(blobs: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        blobs.open("no/such/blob")
    blobs.put("a/b", io.BytesIO(b"x"))
    with pytest.raises(BlobNotFound):
        blobs.open("a")  # a prefix is not a blob


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("/abs", id="leading-slash"),
        pytest.param("a//b", id="empty-segment"),
        pytest.param("a/../b", id="dotdot"),
        pytest.param("../etc/passwd", id="escape"),
        pytest.param("a/./b", id="dot"),
        pytest.param("a/", id="trailing-slash"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\nb", id="newline"),
        pytest.param("x" * 256, id="long-segment"),
        pytest.param("/".join(["x" * 200] * 6), id="long-key"),
    ],
)
def test_bad_keys_are_refused_by_every_method(blobs: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKey):
        check_key(key)
    with pytest.raises(InvalidBlobKey):
        blobs.put(key, io.BytesIO(b"x"))
    with pytest.raises(InvalidBlobKey):
        blobs.put_if_absent(key, io.BytesIO(b"x"))
    with pytest.raises(InvalidBlobKey):
        blobs.open(key)
    with pytest.raises(InvalidBlobKey):
        blobs.stat(key)


def test_keys_may_hold_any_printable_text(blobs: BlobStore) -> None:
    key = "artifacts/1/0/dir with space/ünïcödé %2F ..x/.hidden"
    blobs.put(key, io.BytesIO(b"ok"))
    assert _read(blobs, key) == b"ok"
    assert [i.key for i in blobs.list("artifacts/1/0/dir with")] == [key]


def test_a_key_beside_its_own_prefix_is_refused(blobs: BlobStore) -> None:
    blobs.put("a/b", io.BytesIO(b"x"))
    with pytest.raises(InvalidBlobKey):
        blobs.put("a", io.BytesIO(b"x"))
    with pytest.raises(InvalidBlobKey):
        blobs.put("a/b/c", io.BytesIO(b"x"))
    assert _read(blobs, "a/b") == b"x"


def test_large_blobs_stream_through(blobs: BlobStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(MiB) * 8 + b"tail")
    with open(source, "rb") as data:
        info = blobs.put("big/blob", data)
    assert info.size == 8 * MiB + 4
    with blobs.open("big/blob") as stream:
        assert stream.read(MiB) == source.read_bytes()[:MiB]
    assert _read(blobs, "big/blob") == source.read_bytes()


# ---------------------------------------------------------------- file system only


def test_file_store_leaves_no_temporary_file_when_the_reader_fails(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")

    class Broken(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: object) -> int:
            raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        store.put("a/b", io.BufferedReader(Broken()))
    assert store.stat("a/b") is None
    assert os.listdir(tmp_path / "blobs" / "tmp") == []


def test_file_store_is_shared_by_two_instances_on_one_root(tmp_path: Path) -> None:
    one, two = FileBlobStore(tmp_path / "b"), FileBlobStore(tmp_path / "b")
    one.put("x/y", io.BytesIO(b"1"))
    assert two.put_if_absent("x/y", io.BytesIO(b"2")) is None
    assert _read(two, "x/y") == b"1"
    assert two.delete_prefix("x/") == 1
    assert one.list("") == []
    assert os.listdir(tmp_path / "b" / "objects") == []  # emptied folders are pruned


def test_file_store_sweeps_what_dead_writers_left_and_only_that(tmp_path: Path) -> None:
    FileBlobStore(tmp_path / "blobs")
    tmp = tmp_path / "blobs" / "tmp"
    (tmp / "put-dead").write_bytes(b"partial")
    (tmp / "trash-dead").mkdir()
    (tmp / "trash-dead" / "x").write_bytes(b"x")
    (tmp / "put-busy").write_bytes(b"being written")
    old = 1_000_000_000
    os.utime(tmp / "put-dead", (old, old))
    os.utime(tmp / "trash-dead", (old, old))
    store = FileBlobStore(tmp_path / "blobs")  # a restart after a crash
    assert sorted(p.name for p in tmp.iterdir()) == ["put-busy"]  # a live write is left alone
    assert store.sweep(older_than=0) == 1 and list(tmp.iterdir()) == []
