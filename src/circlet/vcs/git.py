"""The SourceHost adapter for git: a bare mirror per project, read and cloned with the `git` CLI.

Every call runs `git` as a subprocess with an argument list (never a shell string), with
`GIT_TERMINAL_PROMPT=0` (never wait for a password) and `LC_ALL=C` (stable messages). Names that
come from users (branches, tags, revisions, URLs) are checked before they reach the command line,
so none can be read as an option.

Each call runs git as few times as it can (tests/integration/test_git.py counts them). Cost on
a small local repository, idle 2-core machine: sync ~7 ms (one `git fetch`), resolve ~1.5 ms
(one `rev-parse`), commit ~1.6 ms (one `show`), read_file ~1.5 ms (one `cat-file`), checkout
~14 ms (`clone`, `config`, `checkout`): ~25 ms of the 100 ms trigger-to-finished budget.

git runs in its own session: it has no terminal for ssh to prompt on, and a timeout kills it
together with its helpers (ssh, remote-https, upload-pack).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from circlet.core.errors import InvalidRequest, RepositoryError, UnknownRevision
from circlet.core.model import Commit, Project
from circlet.core.ports import Snapshot

log = logging.getLogger("circlet.vcs.git")

# The refs a mirror keeps: branches and tags, nothing else (no pull-request refs, no notes).
MIRROR_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# A fetch into an existing working copy takes what a fresh clone of the mirror would have.
WORKTREE_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")

_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
# What git's check-ref-format refuses anywhere in a name (plus whitespace and control characters).
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(/|$)")
# One NUL-separated record: sha, author name/email/date, committer name/email/date, raw message.
_COMMIT_FORMAT = "%H%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
_STDERR_LIMIT = 2000


class GitSourceHost:
    """SourceHost over the git CLI. Blocking; safe to call from several threads and processes.

    Mirrors live in `mirrors_root/<project id>.git` (or a name made from the slug when the project
    has no id yet). `sync` is serialized per project by a thread lock and an `flock` on a lock file
    beside the mirror; reads need no lock (git updates refs atomically and a fetch never removes
    objects). Any method that needs a mirror creates it when it is missing, so a worker on another
    machine can check out a build without a prior `sync`.
    """

    def __init__(
        self,
        mirrors_root: Path,
        *,
        git: str = "git",
        network_timeout: float = 600.0,
        local_timeout: float = 120.0,
    ) -> None:
        self.mirrors_root = Path(mirrors_root)
        self.git = git
        self.network_timeout = network_timeout
        self.local_timeout = local_timeout
        env = dict(os.environ)
        env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
        self._env = env
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # mirror name -> monotonic time at which the last completed sync started.
        self._synced_at: dict[str, float] = {}

    # ------------------------------------------------------------------ SourceHost

    def probe(self, repo_url: str) -> str | None:
        """The repository's default branch (None when its HEAD names none); RepositoryError if unreadable."""
        _check_url(repo_url)
        result = self._git(["ls-remote", "--symref", "--", repo_url, "HEAD"], timeout=self.network_timeout)
        if result.returncode != 0:
            raise RepositoryError(_git_error(result, f"Cannot read the repository {repo_url}"))
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            # `ref: refs/heads/main<TAB>HEAD`
            if line.startswith("ref: ") and line.endswith("\tHEAD"):
                target = line[len("ref: ") : -len("\tHEAD")]
                if target.startswith("refs/heads/"):
                    return target[len("refs/heads/") :]
        return None

    def sync(self, project: Project) -> None:
        """Create or update the project's mirror from its repo_url. Blocking; RepositoryError on failure.

        Concurrent calls for one project run one at a time; a call that waited while another sync
        started after it was asked for returns at once (that sync already saw a newer state).
        """
        _check_url(project.repo_url)
        name = self._mirror_name(project)
        asked_at = time.monotonic()
        with self._thread_lock(name), self._file_lock(name):
            if self._synced_at.get(name, -1.0) >= asked_at:
                return
            started = time.monotonic()
            mirror = self.mirror_path(project)
            if (mirror / "HEAD").exists():
                self._fetch_mirror(project, mirror)
            else:
                self._create_mirror(project, mirror)
            self._synced_at[name] = started

    def resolve(
        self,
        project: Project,
        *,
        branch: str | None = None,
        tag: str | None = None,
        revision: str | None = None,
    ) -> str:
        """The full SHA to build. A revision wins over a tag, a tag over a branch; with none of
        them the project's default branch. UnknownRevision names what was not found."""
        spec, missing = _spec(project, branch=branch, tag=tag, revision=revision)
        mirror = self._ensure_mirror(project)
        sha = self._rev_parse(mirror, spec)
        # An abbreviated SHA that is also a ref name resolves to the ref; that is not it.
        if sha is None or (revision is not None and not sha.startswith(revision.lower())):
            raise UnknownRevision(missing)
        return sha

    def snapshot(
        self,
        project: Project,
        *,
        branch: str | None = None,
        tag: str | None = None,
        revision: str | None = None,
        path: str,
    ) -> Snapshot:
        """resolve + commit + read_file with ONE git process (`cat-file --batch`, asked twice:
        the commit first, then the file at exactly that commit)."""
        spec, missing = _spec(project, branch=branch, tag=tag, revision=revision)
        mirror = self._ensure_mirror(project)
        with _CatFile(self.git, mirror, self._env, self.local_timeout) as cat:
            found = cat.get(spec)
            if found is None or found[1] != "commit":
                raise UnknownRevision(missing)
            sha, _, raw = found
            if revision is not None and not sha.startswith(revision.lower()):
                raise UnknownRevision(missing)
            blob = cat.get(f"{sha}:{_clean_path(path)}")
        text = blob[2].decode("utf-8", "replace") if blob is not None and blob[1] == "blob" else None
        return Snapshot(sha=sha, commit=parse_commit(sha, raw), file_text=text)

    def commit(self, project: Project, sha: str) -> Commit:
        """What git says about a commit, read with one `git show`; UnknownRevision if absent."""
        mirror = self._ensure_mirror(project)
        _check_sha(sha)
        result = self._git(
            [
                "-c",
                "log.showSignature=false",
                "show",
                "-s",
                "--no-color",
                f"--format={_COMMIT_FORMAT}",
                f"{sha}^{{commit}}",
                "--",
            ],
            cwd=mirror,
        )
        if result.returncode != 0:
            raise UnknownRevision(f'Revision "{sha}" not found in the repository')
        fields = result.stdout.decode("utf-8", "replace").split("\x00", 7)
        if len(fields) != 8:
            raise RepositoryError(f"Unexpected output from git show for {sha}")
        full, a_name, a_email, a_date, c_name, c_email, c_date, message = fields
        message = message.rstrip("\n")
        subject, _, body = message.partition("\n")
        return Commit(
            sha=full,
            subject=subject.strip(),
            body=body.strip(),
            author_name=a_name,
            author_email=a_email,
            author_date=a_date,
            committer_name=c_name,
            committer_email=c_email,
            committer_date=c_date,
        )

    def read_file(self, project: Project, sha: str, path: str) -> str | None:
        """The text of `path` at `sha` (UTF-8, undecodable bytes replaced), None when absent."""
        mirror = self._ensure_mirror(project)
        _check_sha(sha)
        result = self._git(["cat-file", "blob", f"{sha}:{_clean_path(path)}"], cwd=mirror)
        if result.returncode != 0:
            return None
        return result.stdout.decode("utf-8", "replace")

    def checkout(
        self,
        project: Project,
        sha: str,
        dest: Path,
        *,
        branch: str | None = None,
        tag: str | None = None,
    ) -> None:
        """Put a working copy of `sha` at `dest` (config.md 3.3). RepositoryError on failure.

        A new or empty `dest` gets a clone of the mirror; an existing git repository gets a fetch
        from the mirror; anything else is refused. For a branch build the local branch `branch`
        is (re)created at `sha`; otherwise HEAD is detached at `sha`. Local changes are discarded,
        untracked files kept. `origin` points at the project's real repo_url.
        """
        _check_sha(sha)
        if branch is not None and (branch.startswith("-") or _BAD_REF.search(branch)):
            raise InvalidRequest(f'Invalid branch "{branch}"')
        mirror = self._ensure_mirror(project)
        dest = Path(dest)
        if (dest / ".git").exists():
            if self._fetch_into(project, mirror, dest, sha) is not None:
                # The mirror may lack `sha` (a worker's stale mirror): update it and try again.
                self._resync_and_fetch(project, mirror, dest, sha)
        elif dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise RepositoryError(
                f"Directory ({dest}) you are trying to checkout to is not empty and not a git repository"
            )
        else:
            # A plain local clone hardlinks the mirror's object files (git's default for a local
            # path): about as fast as --shared (9.5 vs 9.0 ms on a small repository, O(files)
            # rather than O(bytes) on a large one), yet the copy owns its objects, so a later
            # `fetch --prune` + gc in the mirror cannot break it as it can break an alternates
            # (--shared/--reference) clone. --no-hardlinks copies bytes: same speed on small
            # repositories, slower on large ones, no safer. Git falls back to copying by itself
            # when the mirror is on another file system. `--template=` skips copying sample hooks;
            # `-c` writes gc.auto=0 into the new repository's config (CircleCI disables auto-gc).
            result = self._git(
                [
                    "clone",
                    "-q",
                    "--no-checkout",
                    "--template=",
                    "-c",
                    "gc.auto=0",
                    "--",
                    str(mirror),
                    str(dest),
                ],
                timeout=self.local_timeout,
            )
            if result.returncode != 0:
                raise RepositoryError(_git_error(result, f"Cannot clone into {dest}"))
            self._set_config(dest, "remote.origin.url", project.repo_url)
        if self._checkout_sha(dest, sha, branch) is None:
            return
        self._resync_and_fetch(project, mirror, dest, sha)
        error = self._checkout_sha(dest, sha, branch)
        if error is not None:
            raise RepositoryError(error)

    def list_root(self, project: Project, sha: str, under: str = "") -> tuple[str, ...]:
        """The names at the root of `sha` (one `git ls-tree`), or in its directory `under` (none
        when that is not one); directories and submodules end with "/"."""
        mirror = self._ensure_mirror(project)
        _check_sha(sha)
        tree = f"{sha}:{_clean_path(under)}" if under.strip("/") else f"{sha}^{{tree}}"
        result = self._git(["ls-tree", "-z", tree, "--"], cwd=mirror)
        if result.returncode != 0 and under.strip("/"):
            self.list_root(project, sha)  # UnknownRevision for an unknown commit
            return ()
        if result.returncode != 0:
            raise UnknownRevision(f'Revision "{sha}" not found in the repository')
        names = []
        for record in result.stdout.decode("utf-8", "replace").split("\x00"):
            meta, tab, name = record.partition("\t")
            if tab:  # `<mode> <type> <object>\t<name>`
                names.append(name + "/" if meta.split(" ")[1] in ("tree", "commit") else name)
        return tuple(sorted(names))

    def refs(self, project: Project) -> dict[str, str]:
        """Branches and tags of the mirror (one `git for-each-ref`), annotated tags peeled."""
        mirror = self._ensure_mirror(project)
        fields = "--format=%(refname)%00%(objectname)%00%(*objectname)"
        result = self._git(["for-each-ref", fields, "refs/heads", "refs/tags"], cwd=mirror)
        if result.returncode != 0:
            raise RepositoryError(_git_error(result, f"Cannot list the refs of {project.slug}"))
        found: dict[str, str] = {}
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            name, _, rest = line.partition("\x00")
            direct, _, peeled = rest.partition("\x00")
            found[name] = peeled or direct
        return found

    # ------------------------------------------------------------------ helpers

    def mirror_path(self, project: Project) -> Path:
        return self.mirrors_root / f"{self._mirror_name(project)}.git"

    @staticmethod
    def _mirror_name(project: Project) -> str:
        if project.id is not None:
            return str(project.id)
        return re.sub(r"[^A-Za-z0-9._-]+", "-", project.slug.replace("/", "--")).strip(".-") or "project"

    def _ensure_mirror(self, project: Project) -> Path:
        mirror = self.mirror_path(project)
        if not (mirror / "HEAD").exists():
            self.sync(project)
        return mirror

    def _create_mirror(self, project: Project, mirror: Path) -> None:
        self.mirrors_root.mkdir(parents=True, exist_ok=True)
        # Clone beside the final path, then rename: a half-made mirror is never seen.
        tmp = Path(tempfile.mkdtemp(prefix=f".{mirror.name}-", dir=self.mirrors_root))
        try:
            result = self._git(
                # Let clones of this mirror fetch any commit by SHA, even one no ref points at.
                [
                    "clone",
                    "--mirror",
                    "-q",
                    "--template=",
                    "-c",
                    "uploadpack.allowAnySHA1InWant=true",
                    "--",
                    project.repo_url,
                    str(tmp / "m.git"),
                ],
                timeout=self.network_timeout,
            )
            if result.returncode != 0:
                raise RepositoryError(_git_error(result, f"Cannot clone {project.repo_url}"))
            if mirror.exists():  # left over from an interrupted run: replace it
                shutil.rmtree(mirror)
            (tmp / "m.git").rename(mirror)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("event=mirror_created project=%s mirror=%s", project.slug, mirror)

    def _fetch_mirror(self, project: Project, mirror: Path) -> None:
        # Fetch from repo_url itself, not the `origin` recorded at creation: the URL may change.
        result = self._git(
            [
                "-c",
                "fetch.showForcedUpdates=false",
                "fetch",
                "--prune",
                "-q",
                "--no-write-fetch-head",
                "--no-auto-maintenance",
                "--no-auto-gc",
                "--",
                project.repo_url,
                *MIRROR_REFSPECS,
            ],
            cwd=mirror,
            timeout=self.network_timeout,
        )
        if result.returncode != 0:
            raise RepositoryError(_git_error(result, f"Cannot fetch {project.repo_url}"))

    def _fetch_into(self, project: Project, mirror: Path, dest: Path, sha: str) -> str | None:
        """Fetch `sha` and the mirror's refs into a working copy; None on success, else git's error."""
        result = self._git(
            ["fetch", "-q", "--", str(mirror), sha, *WORKTREE_REFSPECS],
            cwd=dest,
            timeout=self.local_timeout,
        )
        if result.returncode != 0:
            return _git_error(result, f"Cannot fetch {sha} into {dest}")
        self._set_config(dest, "remote.origin.url", project.repo_url)
        self._set_config(dest, "gc.auto", "0")
        return None

    def _resync_and_fetch(self, project: Project, mirror: Path, dest: Path, sha: str) -> None:
        self.sync(project)
        error = self._fetch_into(project, mirror, dest, sha)
        if error is not None:
            raise RepositoryError(error)

    def _checkout_sha(self, dest: Path, sha: str, branch: str | None) -> str | None:
        """Check out `sha` (on branch `branch` when given); None on success, else git's error."""
        if branch is not None:
            args = ["checkout", "-q", "-f", "-B", branch, sha]
        else:
            args = ["checkout", "-q", "-f", "--detach", sha]
        result = self._git(args, cwd=dest, timeout=self.local_timeout)
        if result.returncode != 0:
            return _git_error(result, f"Cannot check out {sha}")
        return None

    def _set_config(self, repo: Path, key: str, value: str) -> None:
        result = self._git(["config", key, value], cwd=repo)
        if result.returncode != 0:
            raise RepositoryError(_git_error(result, f"Cannot set {key} in {repo}"))

    def _rev_parse(self, mirror: Path, spec: str) -> str | None:
        result = self._git(["rev-parse", "--verify", "-q", "--end-of-options", spec], cwd=mirror)
        if result.returncode != 0:
            return None
        sha = result.stdout.decode("ascii", "replace").strip()
        return sha if _FULL_SHA.fullmatch(sha) else None

    def _git(
        self, args: Sequence[str], *, cwd: Path | None = None, timeout: float | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run git; its own session, so it has no terminal to prompt on (ssh asks /dev/tty, not
        stdin) and a timeout kills its helpers (ssh, remote-https, upload-pack) with it."""
        argv = [self.git, *args]
        limit = timeout if timeout is not None else self.local_timeout
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise RepositoryError(f"Cannot run git: {exc}") from exc
        try:
            out, err = proc.communicate(timeout=limit)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise RepositoryError(f"git {args[0]} timed out after {limit:g}s") from exc
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _thread_lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    @contextmanager
    def _file_lock(self, name: str) -> Iterator[None]:
        self.mirrors_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.mirrors_root / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _spec(project: Project, *, branch: str | None, tag: str | None, revision: str | None) -> tuple[str, str]:
    """The rev-parse spec of the commit to build and the message to give when it is missing.
    A revision wins over a tag, a tag over a branch; with none of them the default branch."""
    for what, value in (("branch", branch), ("tag", tag), ("revision", revision)):
        if value is not None and value.startswith("-"):
            raise InvalidRequest(f'Invalid {what} "{value}": it must not start with "-"')
    if revision is not None:
        missing = f'Revision "{revision}" not found in the repository'
        if not _HEX.fullmatch(revision):
            raise UnknownRevision(missing)
        return f"{revision}^{{commit}}", missing
    if tag is not None:
        ref, missing, name = f"refs/tags/{tag}", f'Tag "{tag}" not found in the repository', tag
    else:
        name = branch if branch is not None else project.default_branch
        ref, missing = f"refs/heads/{name}", f'Branch "{name}" not found in the repository'
    if not name or _BAD_REF.search(name) or name.endswith((".", "/")) or name.startswith("/"):
        raise UnknownRevision(missing)
    return f"{ref}^{{commit}}", missing


def _clean_path(path: str) -> str:
    clean = path.strip("/")
    while clean.startswith("./"):
        clean = clean[2:]
    return clean


class _CatFile:
    """One `git cat-file --batch` process, asked one object at a time."""

    def __init__(self, git: str, repo: Path, env: dict[str, str], timeout: float) -> None:
        try:
            self._proc = subprocess.Popen(
                [git, "cat-file", "--batch"],
                cwd=repo,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise RepositoryError(f"Cannot run git: {exc}") from exc
        self._timer = threading.Timer(timeout, self._kill)
        self._timer.start()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    def get(self, name: str) -> tuple[str, str, bytes] | None:
        """(sha, type, content) of an object name, or None when git says it is missing."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(name.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode("ascii", "replace").split()
        if len(header) != 3 or not header[2].isdigit():
            if header[-1:] == ["missing"] or header[-1:] == ["ambiguous"]:
                return None
            raise RepositoryError(f"Unexpected answer from git cat-file for {name}")
        size = int(header[2])
        content = self._proc.stdout.read(size + 1)[:size]  # the content, then a newline
        return header[0], header[1], content

    def __enter__(self) -> _CatFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc.wait()


def _git_date(stamp: str, offset: str) -> str:
    """git's strict ISO-8601 (%aI) from a raw object's `<epoch> <+hhmm>`."""
    sign = -1 if offset.startswith("-") else 1
    minutes = int(offset[1:3]) * 60 + int(offset[3:5])
    zone = timezone(sign * timedelta(minutes=minutes))
    return datetime.fromtimestamp(int(stamp), zone).isoformat()


def parse_commit(sha: str, raw: bytes) -> Commit:
    """A Commit from a raw commit object (as `cat-file` gives it), as `git show --format` would."""
    head, _, message_bytes = raw.partition(b"\n\n")
    people: dict[bytes, tuple[str, str, str]] = {}
    encoding = "utf-8"
    for line in head.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"encoding":
            encoding = value.decode("ascii", "replace").strip() or "utf-8"
    for line in head.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key in (b"author", b"committer"):
            text = _decode(value, encoding)
            ident, _, when = text.rpartition(">")
            name, _, email = ident.partition("<")
            stamp, _, offset = when.strip().partition(" ")
            people[key] = (name.strip(), email.strip(), _git_date(stamp, offset or "+0000"))
    author = people.get(b"author", ("", "", ""))
    committer = people.get(b"committer", author)
    message = _decode(message_bytes, encoding).rstrip("\n")
    subject, _, body = message.partition("\n")
    return Commit(
        sha=sha,
        subject=subject.strip(),
        body=body.strip(),
        author_name=author[0],
        author_email=author[1],
        author_date=author[2],
        committer_name=committer[0],
        committer_email=committer[1],
        committer_date=committer[2],
    )


def _decode(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


def _check_url(url: str) -> None:
    if not url or url.startswith("-"):
        raise InvalidRequest(f'Invalid repository URL "{url}"')


def _check_sha(sha: str) -> None:
    if not _HEX.fullmatch(sha):
        raise UnknownRevision(f'Revision "{sha}" not found in the repository')


def _git_error(result: subprocess.CompletedProcess[bytes], fallback: str) -> str:
    text = result.stderr.decode("utf-8", "replace").strip()
    if len(text) > _STDERR_LIMIT:
        text = text[-_STDERR_LIMIT:]
    return text or f"{fallback} (git exited with {result.returncode})"
