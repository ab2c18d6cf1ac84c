"""CircleCI 1.0 inference: what a repository without a config runs (config.md 12.2).

Pure: takes the names at the repository's root (directories end with "/") and the text of the
few files whose content matters (`files_to_read` says which), and returns commands per phase
or a whole JobPlan (its shape and steps: core/phases.py). The service does the reading
(SourceHost.list_root / read_file).

Rules are a table in the spec's row order; several languages may contribute, in that order.
DECISIONs where the spec's 2013 commands no longer work (each also in docs/inference.md):
- Python installs with `pip install .` (not `python setup.py install`, which current setuptools
  refuses) inside a virtualenv made first (`python3 -m venv ~/venv`, activated for every later
  command through $BASH_ENV; skipped with a note when venv is unavailable).
- Python tests run with `pytest` (not `nosetests` or `python setup.py test`, both gone from
  current Python); `tox` is preferred when tox.ini exists, `python manage.py test` for Django.
  The runner is installed into the virtualenv first (`pip install pytest` / `pip install tox`).
- npm: `npm ci` when a lockfile is committed, else `npm install`; npm's placeholder test script
  (`echo "Error: no test specified" && exit 1`) counts as no test script.
- Go modules: `go mod download` when go.mod exists (`go get -d` is obsolete there).
- `make test` (a Makefile with a `test` target) runs only when no other rule found a test command.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from circlet.core.phases import Command, Phase, checkout_step, command_step, plan_1_0
from circlet.core.plan import JobPlan

VENV_NAME = "python3 -m venv ~/venv"
VENV_COMMAND = (
    "if python3 -m venv ~/venv; then\n"
    "  echo 'source ~/venv/bin/activate' >> \"$BASH_ENV\"\n"
    "else\n"
    "  echo 'python3 -m venv is not available here: the commands use the system Python' >&2\n"
    "fi\n"
)
NPM_PLACEHOLDER = re.compile(r'^echo "Error: no test specified" && exit 1$')
# Files whose text inference reads (everything else is decided by names alone).
READS = (
    "package.json",
    "project.clj",
    "Makefile",
    "makefile",
    "GNUmakefile",
    "setup.py",
    "pyproject.toml",
    "setup.cfg",
)
# What circlet looks for, as the no-tests message lists it.
LOOKED_FOR = (
    "package.json",
    "requirements.txt, setup.py, pyproject.toml, tox.ini, manage.py or test*.py",
    "Gemfile",
    "project.clj",
    "pom.xml",
    "build.gradle",
    "build.xml",
    "build.sbt",
    "composer.json",
    "phpunit.xml",
    "*.cabal",
    "*.go or go.mod",
    "a Makefile with a test target",
)


@dataclass(frozen=True, kw_only=True)
class Inferred:
    """The commands inference found, per phase, and what made it find them."""

    dependencies: tuple[Command, ...] = ()
    test: tuple[Command, ...] = ()
    found: tuple[str, ...] = ()  # the rules that matched, e.g. ("package.json", "Makefile")
    notes: tuple[str, ...] = ()  # warnings (an unreadable package.json...)


@dataclass(frozen=True, kw_only=True)
class Inference:
    """A plan made by inference, with what the build's messages should say (None: nothing)."""

    plan: JobPlan
    inferred: Inferred
    message: str | None = None


@dataclass(frozen=True, kw_only=True)
class _Repo:
    """The root of the repository as the rules see it."""

    files: frozenset[str]  # file names at the root
    dirs: frozenset[str]  # directory names at the root (without the slash)
    texts: Mapping[str, str | None] = field(default_factory=dict)

    def has(self, *names: str) -> bool:
        return any(name in self.files for name in names)

    def text(self, name: str) -> str:
        return self.texts.get(name) or ""


_Found = tuple[tuple[Command, ...], tuple[Command, ...], tuple[str, ...]]  # deps, tests, notes


def _cmds(*commands: str) -> tuple[Command, ...]:
    return tuple(Command(command=c) for c in commands)


def _node(repo: _Repo) -> _Found | None:
    if not repo.has("package.json"):
        return None
    lock = repo.has("package-lock.json", "npm-shrinkwrap.json")
    notes: tuple[str, ...] = ()
    test = ""
    try:
        data = json.loads(repo.text("package.json") or "{}")
        scripts = data.get("scripts") if isinstance(data, dict) else None
        if isinstance(scripts, dict) and isinstance(scripts.get("test"), str):
            test = scripts["test"].strip()
    except ValueError as exc:
        notes = (f"package.json is not valid JSON ({exc}): circlet cannot see its test script",)
    tests = _cmds("npm test") if test and not NPM_PLACEHOLDER.match(test) else ()
    return _cmds("npm ci" if lock else "npm install"), tests, notes


_PYTEST_MARK = re.compile(r"pytest")
_SETUP_TESTS = re.compile(r"\b(test_suite|tests_require)\s*=")


def _python(repo: _Repo) -> _Found | None:
    test_files = any(re.fullmatch(r"(test.*|.*_test)\.py", name) for name in repo.files)
    if not (repo.has("requirements.txt", "setup.py", "pyproject.toml", "tox.ini", "manage.py") or test_files):
        return None
    deps = [Command(command=VENV_COMMAND, name=VENV_NAME)]
    if repo.has("requirements.txt"):
        deps.append(Command(command="pip install -r requirements.txt"))
    pyproject = repo.text("pyproject.toml")
    if repo.has("setup.py") or re.search(r"^\[(project|build-system|tool\.poetry)\]", pyproject, re.M):
        deps.append(Command(command="pip install ."))
    tests: tuple[Command, ...] = ()
    if repo.has("tox.ini"):
        deps.append(Command(command="pip install tox"))
        tests = _cmds("tox")
    elif repo.has("manage.py"):
        tests = _cmds("python manage.py test")
    elif (
        test_files
        or repo.has("conftest.py", "pytest.ini")
        or {"tests", "test"} & repo.dirs
        or _PYTEST_MARK.search(pyproject)
        or _PYTEST_MARK.search(repo.text("setup.cfg"))
        or _SETUP_TESTS.search(repo.text("setup.py"))
    ):
        deps.append(Command(command="pip install pytest"))
        tests = _cmds("pytest")
    return tuple(deps), tests, ()


def _ruby(repo: _Repo) -> _Found | None:
    if not repo.has("Gemfile"):
        return None
    tests = [
        c for d, c in (("spec", "rspec"), ("features", "cucumber"), ("test", "rake test")) if d in repo.dirs
    ]
    return _cmds("bundle check || bundle install"), _cmds(*(f"bundle exec {c}" for c in tests)), ()


def _clojure(repo: _Repo) -> _Found | None:
    if not repo.has("project.clj"):
        return None
    midje = "midje" in repo.text("project.clj")
    return _cmds("lein deps"), _cmds("lein trampoline midje" if midje else "lein test"), ()


def _maven(repo: _Repo) -> _Found | None:
    if not repo.has("pom.xml"):
        return None
    return _cmds("mvn dependency:resolve"), _cmds("mvn integration-test"), ()


def _gradle(repo: _Repo) -> _Found | None:
    if not repo.has("build.gradle", "build.gradle.kts"):
        return None
    gradle = "./gradlew" if repo.has("gradlew") else "gradle"
    return _cmds(f"{gradle} dependencies"), _cmds(f"{gradle} test"), ()


def _by_name(name: str, deps: tuple[str, ...], tests: tuple[str, ...]) -> Callable[[_Repo], _Found | None]:
    def rule(repo: _Repo) -> _Found | None:
        return (_cmds(*deps), _cmds(*tests), ()) if repo.has(name) else None

    return rule


def _cabal(repo: _Repo) -> _Found | None:
    if not any(name.endswith(".cabal") for name in repo.files):
        return None
    return _cmds("cabal install --only-dependencies"), _cmds("cabal build", "cabal test"), ()


def _go(repo: _Repo) -> _Found | None:
    if not (repo.has("go.mod") or any(name.endswith(".go") for name in repo.files)):
        return None
    deps = "go mod download" if repo.has("go.mod") else "go get -t -d -v ./..."
    return _cmds(deps), _cmds("go test -v -race ./..."), ()


_TARGETS = re.compile(r"^([^:=#\s][^:=#]*):(?!=)")


def has_make_target(text: str, target: str = "test") -> bool:
    """Whether a Makefile's text defines `target` (a rule line `a b test: deps`, not `x := y`)."""
    for line in text.splitlines():
        match = _TARGETS.match(line)
        if match and target in match.group(1).split():
            return True
    return False


def _makefile(repo: _Repo) -> str | None:
    for name in ("GNUmakefile", "makefile", "Makefile"):  # GNU make's search order
        if repo.has(name):
            return name
    return None


# (what the message calls it, rule) in the spec's row order; Make comes last and apart.
RULES: tuple[tuple[str, Callable[[_Repo], _Found | None]], ...] = (
    ("package.json", _node),
    ("Python", _python),
    ("Gemfile", _ruby),
    ("project.clj", _clojure),
    ("pom.xml", _maven),
    ("build.gradle", _gradle),
    ("build.xml", _by_name("build.xml", (), ("ant",))),
    ("build.sbt", _by_name("build.sbt", ("sbt test:compile",), ("sbt test:test",))),
    ("composer.json", _by_name("composer.json", ("composer install",), ())),
    ("phpunit.xml", _by_name("phpunit.xml", (), ("phpunit",))),
    ("cabal", _cabal),
    ("Go", _go),
)


def _repo(entries: Collection[str], texts: Mapping[str, str | None]) -> _Repo:
    return _Repo(
        files=frozenset(e for e in entries if not e.endswith("/")),
        dirs=frozenset(e.rstrip("/") for e in entries if e.endswith("/")),
        texts=texts,
    )


def files_to_read(entries: Collection[str]) -> tuple[str, ...]:
    """The root files whose text `infer` needs (those of READS that exist), in READS order."""
    present = set(entries)
    return tuple(name for name in READS if name in present)


def infer(entries: Collection[str], texts: Mapping[str, str | None]) -> Inferred:
    """The commands inference finds for a root holding `entries` (directories end with "/");
    `texts` holds the files named by files_to_read (a missing one counts as empty)."""
    repo = _repo(entries, texts)
    deps: list[Command] = []
    tests: list[Command] = []
    found: list[str] = []
    notes: list[str] = []
    for label, rule in RULES:
        result = rule(repo)
        if result is None:
            continue
        found.append(label)
        deps.extend(result[0])
        tests.extend(result[1])
        notes.extend(result[2])
    makefile = _makefile(repo)
    if makefile and not tests and has_make_target(repo.text(makefile)):
        found.append(makefile)
        tests.append(Command(command="make test"))
    return Inferred(dependencies=tuple(deps), test=tuple(tests), found=tuple(found), notes=tuple(notes))


def nothing_message(inferred: Inferred) -> str | None:
    """What the build's messages say when inference found no test command (None when it found one)."""
    if inferred.test:
        return None
    if inferred.found:
        return (
            f"circlet inferred how to set this project up (from {', '.join(inferred.found)}) but found "
            "no test command, so the build ends no_tests. Add a .circleci/config.yml to say what to run."
        )
    return (
        "No .circleci/config.yml or circle.yml, and nothing circlet can infer steps from: it looked at "
        f"the repository's root for {'; '.join(LOOKED_FOR)}. Add a .circleci/config.yml to say what to run."
    )


def infer_plan(
    entries: Collection[str], texts: Mapping[str, str | None], *, reponame: str, job_name: str = "build"
) -> Inference:
    """The JobPlan of a repository without a config: checkout, then the inferred dependency and
    test commands (`source: "inference"`), run from `~/<reponame>` (config.md 12.1)."""
    inferred = infer(entries, texts)
    steps = [
        checkout_step(reponame),
        *(command_step(c, Phase.DEPENDENCIES) for c in inferred.dependencies),
        *(command_step(c, Phase.TEST) for c in inferred.test),
    ]
    plan = plan_1_0(job_name, tuple(steps), reponame=reponame)
    return Inference(plan=plan, inferred=inferred, message=nothing_message(inferred))
