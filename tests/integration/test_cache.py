"""save_cache / restore_cache with a real JobRunner, real tar and the filesystem blob store."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from circlet.core.blobkeys import caches_prefix
from circlet.core.cachekey import file_checksum
from circlet.core.model import ActionStatus, Outcome, Project, VcsType
from circlet.core.plan import PlannedStep, StepKind
from circlet.runner import archive
from circlet.runner.cache import find_cache
from circlet.store.blobs_fs import FileBlobStore
from circlet.testing.blobs import InMemoryBlobStore, run_steps


def run(command: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.RUN, name=command, command=command)


def save(key: str, *paths: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.SAVE_CACHE, name="Saving Cache", args={"key": key, "paths": list(paths)})


def restore(*keys: str) -> PlannedStep:
    return PlannedStep(kind=StepKind.RESTORE_CACHE, name="Restoring Cache", args={"keys": list(keys)})


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def build(blobs: FileBlobStore, tmp_path: Path, steps: list[PlannedStep], n: int, **kw: Any) -> Any:
    return run_steps(steps, blobs=blobs, workspaces=tmp_path / "ws", build_id=100 + n, build_num=n, **kw)


def test_save_then_restore_in_a_later_build_with_metadata_and_links(
    blobs: FileBlobStore, tmp_path: Path
) -> None:
    outcome, first = build(
        blobs,
        tmp_path,
        [
            run(
                "mkdir -p deps/sub ~/.m2 && echo one > deps/a && echo two > deps/sub/b && "
                "ln -s a deps/link && echo repo > ~/.m2/settings && chmod 750 deps/sub && "
                "touch -d @1000000 deps/a"
            ),
            save("v1-{{ .Branch }}", "deps", "~/.m2", "not-there"),
        ],
        1,
    )
    assert outcome is Outcome.SUCCESS, first.log(102)
    log = first.log(102)
    assert "Stored Cache to v1-main" in log and "  * ~/project/deps" in log and "  * ~/.m2" in log
    assert "Warning: could not find path" in log and "not-there" in log
    outcome, second = build(
        blobs,
        tmp_path,
        [
            restore("v1-{{ .Branch }}"),
            run(
                'test "$(cat deps/a deps/sub/b ~/.m2/settings)" = "$(printf "one\\ntwo\\nrepo")" && '
                'test "$(readlink deps/link)" = a && test "$(stat -c %a deps/sub)" = 750 && '
                'test "$(stat -c %Y deps/a)" = 1000000'
            ),
        ],
        2,
    )
    assert outcome is Outcome.SUCCESS, second.log(101) + second.log(102)
    log = second.log(101)
    assert "Found a cache from build 1 at v1-main" in log
    assert "Cached paths:\n  * ~/project/deps\n  * ~/.m2\nUnarchiving cache..." in log
    assert "Size: " in log


def test_a_saved_key_is_immutable(blobs: FileBlobStore, tmp_path: Path) -> None:
    build(blobs, tmp_path, [run("echo first > f"), save("k", "f")], 1)
    outcome, second = build(blobs, tmp_path, [run("echo second > f"), save("k", "f")], 2)
    assert outcome is Outcome.SUCCESS
    assert "Skipping cache generation, cache already exists for key: k" in second.log(102)
    outcome, third = build(blobs, tmp_path, [restore("k"), run('test "$(cat f)" = first')], 3)
    assert outcome is Outcome.SUCCESS, third.log(101)


def test_keys_in_order_and_prefix_matching_takes_the_newest(blobs: FileBlobStore, tmp_path: Path) -> None:
    build(blobs, tmp_path, [run("echo old > f"), save("v1-deps-aaa", "f")], 1)
    build(blobs, tmp_path, [run("echo exact > f"), save("v1-deps", "f")], 2)
    build(blobs, tmp_path, [run("echo newest > f"), save("v1-deps-zzz-{{ .BuildNum }}", "f")], 3)
    outcome, found = build(
        blobs, tmp_path, [restore("v2-{{ .Branch }}", "v1-deps", "v1-"), run('test "$(cat f)" = newest')], 4
    )
    assert outcome is Outcome.SUCCESS, found.log(101) + found.log(102)
    log = found.log(101)
    assert "No cache is found for key: v2-main" in log
    assert "Found a cache from build 3 at v1-deps-zzz-3" in log  # newest, though v1-deps matches exactly


def test_no_cache_at_all_is_a_warning(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, reporter = build(blobs, tmp_path, [restore("nothing-{{ .Branch }}")], 1)
    assert outcome is Outcome.SUCCESS
    assert "Warning: no cache found for any key" in reporter.log(101)


def test_caches_belong_to_their_project(blobs: FileBlobStore, tmp_path: Path) -> None:
    build(blobs, tmp_path, [run("echo x > f"), save("shared", "f")], 1)
    other = Project(id=2, vcs_type=VcsType.GITHUB, username="acme", reponame="other", repo_url="/x")
    outcome, reporter = build(blobs, tmp_path, [restore("shared"), run("test ! -e f")], 2, project=other)
    assert outcome is Outcome.SUCCESS
    assert "No cache is found for key: shared" in reporter.log(101)
    assert blobs.list(caches_prefix(2)) == []


def test_checksum_keys_follow_file_contents(blobs: FileBlobStore, tmp_path: Path) -> None:
    digest = file_checksum(hashlib.sha256(b"lock v1\n").digest())
    outcome, reporter = build(
        blobs,
        tmp_path,
        [run("echo 'lock v1' > deps.lock && echo d > d"), save('deps-{{ checksum "deps.lock" }}', "d")],
        1,
    )
    assert outcome is Outcome.SUCCESS
    assert f"Stored Cache to deps-{digest}" in reporter.log(102)
    assert find_cache(blobs, 1, f"deps-{digest}") is not None


@pytest.mark.parametrize(
    ("key", "words"),
    [
        pytest.param("{{ .Unknown }}", "unknown cache key template", id="unknown-template"),
        pytest.param('{{ checksum "missing.lock" }}', "no such file", id="missing-checksum-file"),
    ],
)
def test_bad_keys_fail_the_step(blobs: FileBlobStore, tmp_path: Path, key: str, words: str) -> None:
    outcome, reporter = build(blobs, tmp_path, [run("echo x > f"), save(key, "f")], 1)
    assert outcome is Outcome.FAILED and reporter.status(102) is ActionStatus.FAILED
    assert words in reporter.log(102)
    outcome, reporter = build(blobs, tmp_path, [restore(key)], 2)
    assert outcome is Outcome.FAILED and words in reporter.log(101)


def test_paths_outside_the_build_are_refused(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, reporter = build(blobs, tmp_path, [save("k", "/etc")], 1)
    assert outcome is Outcome.FAILED
    assert "outside this build's directories" in reporter.log(101)
    assert blobs.list("") == []


def test_absolute_working_directory_is_restored_in_place(blobs: FileBlobStore, tmp_path: Path) -> None:
    workdir = tmp_path / "go" / "src"
    build(
        blobs,
        tmp_path,
        [run("mkdir -p vendor && echo v > vendor/m"), save("k", "vendor")],
        1,
        working_directory=str(workdir),
    )
    (workdir / "vendor" / "m").unlink()
    outcome, reporter = build(
        blobs, tmp_path, [restore("k"), run("cat vendor/m")], 2, working_directory=str(workdir)
    )
    assert outcome is Outcome.SUCCESS, reporter.log(101)
    assert (workdir / "vendor" / "m").read_text() == "v\n"
    assert f"  * {workdir}/vendor" in reporter.log(101)


def test_concurrent_saves_of_one_key_commit_one_cache(blobs: FileBlobStore, tmp_path: Path) -> None:
    results: dict[int, str] = {}

    def one(n: int) -> None:
        outcome, reporter = run_steps(
            [run(f"mkdir d && seq 1 20000 > d/{n}"), save("race", "d")],
            blobs=blobs,
            workspaces=tmp_path / f"ws{n}",
            build_id=200 + n,
            build_num=n,
        )
        assert outcome is Outcome.SUCCESS
        results[n] = reporter.log(102)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(1, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum("Stored Cache to race" in log for log in results.values()) == 1
    metas = [i.key for i in blobs.list(caches_prefix(1)) if i.key.endswith("@meta.json")]
    parts = [i.key for i in blobs.list(caches_prefix(1)) if i.key.endswith(".tar")]
    assert len(metas) == 1 and len(parts) == 1  # the losers' archives are gone


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("store", ["memory", "file"])
def test_archives_round_trip_through_every_store_and_compression(
    tmp_path: Path, compression: str, store: str
) -> None:
    if compression == "zstd" and archive.ZSTD is None:
        pytest.skip("no zstd on this machine")
    blobs: Any = InMemoryBlobStore() if store == "memory" else FileBlobStore(tmp_path / "blobs")
    source = tmp_path / "src"
    (source / "tree" / "deep").mkdir(parents=True)
    (source / "tree" / "deep" / "f").write_bytes(bytes(range(256)) * 1000)
    (source / "tree" / "link").symlink_to("deep/f")
    packed = archive.pack(blobs, "a/b.tar", source, ["tree"], compression=compression)
    assert packed.info is not None and packed.compression == compression
    assert archive.pack(blobs, "a/b.tar", source, ["tree"], if_absent=True).info is None
    with blobs.open("a/b.tar") as stream:
        archive.unpack(stream, tmp_path / "dest", compression)
    assert (tmp_path / "dest" / "tree" / "deep" / "f").read_bytes() == bytes(range(256)) * 1000
    assert os.readlink(tmp_path / "dest" / "tree" / "link") == "deep/f"
    with pytest.raises(archive.ArchiveError, match=r"vanished|Cannot stat"):
        archive.pack(blobs, "a/c.tar", source, ["missing"], compression=compression)
    with blobs.open("a/b.tar") as stream, pytest.raises(archive.ArchiveError):
        archive.unpack(stream, tmp_path / "bad", "none" if compression == "zstd" else "zstd")


def test_a_restore_extracts_only_the_path_the_cache_was_saved_for(
    blobs: FileBlobStore, tmp_path: Path
) -> None:
    import io
    import json
    import tarfile

    outcome, first = build(blobs, tmp_path, [run("mkdir -p deps && echo one > deps/a"), save("k", "deps")], 1)
    assert outcome is Outcome.SUCCESS, first.log(102)
    found = find_cache(blobs, 1, "k")
    assert found is not None
    with blobs.open(found[1].key) as stream:
        part = json.loads(stream.read())["parts"][0]
    crafted = io.BytesIO()  # the part, rewritten by whoever could write the store: one more member
    with tarfile.open(fileobj=crafted, mode="w") as tar:
        for name, data in (("project/deps/a", b"one\n"), ("project/.bashrc-evil", b"evil\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    crafted.seek(0)
    blobs.put(part["blob"], crafted)
    part_record = {**part, "compression": "none"}
    meta_key = found[1].key
    with blobs.open(meta_key) as stream:
        meta = json.loads(stream.read())
    meta["parts"] = [part_record]
    blobs.put(meta_key, io.BytesIO(json.dumps(meta).encode()))
    outcome, second = build(blobs, tmp_path, [restore("k"), run("cat deps/a; ls -a ~/project")], 2)
    assert outcome is Outcome.SUCCESS, second.log(101)
    assert second.log(102).startswith("one\n")
    assert ".bashrc-evil" not in second.log(102)


def test_a_superseding_save_keeps_only_the_newest_two_caches_of_its_prefix(
    blobs: FileBlobStore, tmp_path: Path
) -> None:
    def save_superseding(n: int) -> PlannedStep:
        return PlannedStep(
            kind=StepKind.SAVE_CACHE,
            name="Save cache",
            args={"key": f"v1-main:{n}", "paths": ["deps"], "supersedes": "v1-main:"},
        )

    for n in range(1, 5):
        outcome, result = build(
            blobs, tmp_path, [run(f"mkdir -p deps && echo {n} > deps/n"), save_superseding(n)], n
        )
        assert outcome is Outcome.SUCCESS, result.log(102)
    outcome, _ = build(
        blobs, tmp_path, [run("mkdir -p deps && echo x > deps/n"), save("v1-dev:1", "deps")], 9
    )
    assert outcome is Outcome.SUCCESS

    kept = sorted(k for info in blobs.list(caches_prefix(1)) if (k := info.key).endswith("@meta.json"))
    assert [k.split("/")[2] for k in kept] == ["v1-dev%3A1", "v1-main%3A3", "v1-main%3A4"]
    assert not [info for info in blobs.list(caches_prefix(1)) if "v1-main%3A1" in info.key]
    assert "Removed 1 older cache(s) of v1-main:" in result.log(102)


def test_a_cache_deleted_while_it_is_restored_is_no_cache(blobs: FileBlobStore, tmp_path: Path) -> None:
    outcome, _ = build(blobs, tmp_path, [run("mkdir -p deps && echo 1 > deps/n"), save("v1", "deps")], 1)
    assert outcome is Outcome.SUCCESS
    found = find_cache(blobs, 1, "v1")
    assert found is not None
    real_open = blobs.open

    def open_after_expiry(key: str) -> Any:
        if key.endswith(".tar"):  # the janitor removed the cache between its record and its parts
            blobs.delete_prefix(found[1].key[: -len("@meta.json")])
        return real_open(key)

    blobs.open = open_after_expiry  # type: ignore[method-assign]
    outcome, result = build(blobs, tmp_path, [restore("v1"), run("test ! -e deps/n")], 2)

    assert outcome is Outcome.SUCCESS, result.log(101)
    assert "was deleted while restoring; continuing without it" in result.log(101)


def optional_restore(*keys: str) -> PlannedStep:
    """As the 1.0 "Restore cache" step (core/phases.py): its failures are warnings."""
    return PlannedStep(
        kind=StepKind.RESTORE_CACHE, name="Restore cache", args={"keys": list(keys), "optional": True}
    )


def test_a_corrupt_cache_fails_a_restore_but_not_an_optional_one(
    blobs: FileBlobStore, tmp_path: Path
) -> None:
    import io
    import json

    outcome, _ = build(blobs, tmp_path, [run("mkdir -p deps && echo 1 > deps/n"), save("v1:1", "deps")], 1)
    assert outcome is Outcome.SUCCESS
    found = find_cache(blobs, 1, "v1:")
    assert found is not None
    with blobs.open(found[1].key) as stream:
        blobs.put(
            json.loads(stream.read())["parts"][0]["blob"], io.BytesIO(b"garbage, not a tar archive" * 50)
        )

    outcome, plain = build(blobs, tmp_path, [restore("v1:"), run("echo never")], 2)
    assert outcome is Outcome.FAILED  # 2.x restore_cache: as before
    assert plain.status(101) is ActionStatus.FAILED
    assert "Could not restore ~/project/deps" in plain.log(101)
    assert "Warning" not in plain.log(101)

    # 1.0: the build goes on and saves a good cache, which the next build restores.
    steps = [
        optional_restore("v1:"),
        run("mkdir -p deps && echo 3 > deps/n"),
        save("v1:{{ .BuildNum }}", "deps"),
    ]
    outcome, optional = build(blobs, tmp_path, steps, 3)
    assert outcome is Outcome.SUCCESS, optional.log(101)
    assert optional.status(101) is ActionStatus.SUCCESS
    log = optional.log(101)
    assert "Unarchiving cache...\nWarning: Could not restore ~/project/deps: " in log  # (then tar's words)
    assert log.endswith("; continuing without the cache\n")
    outcome, later = build(blobs, tmp_path, [optional_restore("v1:"), run('test "$(cat deps/n)" = 3')], 4)
    assert outcome is Outcome.SUCCESS, later.log(101) + later.log(102)
    assert "Found a cache from build 3 at v1:3" in later.log(101)


def test_an_optional_restore_without_a_blob_store_is_a_warning(tmp_path: Path) -> None:
    outcome, plain = run_steps([restore("k")], blobs=None, workspaces=tmp_path / "ws")
    assert outcome is Outcome.FAILED
    assert plain.log(101) == "Caches cannot be restored here: this runner has no blob store\n"
    outcome, optional = run_steps([optional_restore("k")], blobs=None, workspaces=tmp_path / "ws")
    assert outcome is Outcome.SUCCESS
    assert optional.log(101) == (
        "Warning: Caches cannot be restored here: this runner has no blob store;"
        " continuing without the cache\n"
    )
