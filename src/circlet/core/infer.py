"""CircleCI 1.0 inference: what a repository without a config runs (config.md 12.2).

Pure: takes the names at the repository's root (directories end with "/") and the text of the
few files whose content matters (`files_to_read` says which), and returns commands per phase
or a whole JobPlan. The service does the reading (SourceHost.list_root / read_file).

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
from dataclasses import dataclass, field, replace
from enum import StrEnum

from circlet.core.plan import DEFAULT_NO_OUTPUT_TIMEOUT, JobPlan, PlannedStep, StepKind, When

SHELL_1_0 = "/bin/bash"  # config.md 12.1: a new non-login shell per command, no -e
CHECKOUT_NAME = "Checkout code"
# The directories every 1.0 build gets (config.md 4) and collects after its last phase (12.1).
ARTIFACTS_ENV = "CIRCLE_ARTIFACTS"
TEST_REPORTS_ENV = "CIRCLE_TEST_REPORTS"
TEST_METADATA_NAME = "Collect test metadata"
ARTIFACTS_NAME = "Collect artifacts"
_LEADING_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
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


class Phase(StrEnum):
    """A CircleCI 1.0 phase (config.md 12.1); a step's action `type` is its phase."""

    MACHINE = "machine"  # machine set-up and environment
    CHECKOUT = "checkout"  # the code is checked out
    DEPENDENCIES = "dependencies"  # install what the code needs
    DATABASE = "database"  # set databases up
    COMPILE = "compile"  # build the code
    TEST = "test"  # run the tests (every command runs, even after a failure)
    DEPLOYMENT = "deployment"  # deploy, only when everything before passed


@dataclass(frozen=True, kw_only=True)
class Command:
    """One inferred command: what runs and the name its step shows."""

    command: str
    name: str = ""  # empty: the command itself

    @property
    def label(self) -> str:
        return self.name or self.command


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


def checkout_step() -> PlannedStep:
    return PlannedStep(kind=StepKind.CHECKOUT, name=CHECKOUT_NAME, type=Phase.CHECKOUT, source="template")


def command_step(
    command: Command,
    phase: Phase,
    *,
    source: str = "inference",
    environment: Mapping[str, str] | None = None,
    working_directory: str | None = None,
    no_output_timeout: float = DEFAULT_NO_OUTPUT_TIMEOUT,
    background: bool = False,
    parallel: bool = True,
) -> PlannedStep:
    """A 1.0 command as a run step: one shell per command, test commands run after failures;
    `parallel=False`: node 0 alone runs it."""
    return PlannedStep(
        kind=StepKind.RUN,
        name=command.label,
        command=command.command,
        shell=SHELL_1_0,
        type=phase.value,
        source=source,
        when=When.ALWAYS if phase is Phase.TEST else When.ON_SUCCESS,
        environment=dict(environment or {}),
        working_directory=working_directory,
        no_output_timeout=no_output_timeout,
        background=background,
        parallel=parallel,
    )


def teardown_steps(artifacts: tuple[str, ...] = ()) -> tuple[PlannedStep, ...]:
    """What a 1.0 build does after its last phase (config.md 12.1, 12.3), on every node and even
    after a failure (store steps always run, config.md 3.2): read the JUnit reports in
    $CIRCLE_TEST_REPORTS, then store $CIRCLE_ARTIFACTS (named `$CIRCLE_ARTIFACTS/<path inside>`,
    CircleCI 1.0's `pretty_path`) and each `general.artifacts` path (relative to the build dir,
    `~` allowed). The runner puts the directories' paths in (expand_step_paths)."""
    steps = [
        PlannedStep(
            kind=StepKind.STORE_TEST_RESULTS,
            name=TEST_METADATA_NAME,
            type="teardown",
            source="template",
            when=When.ALWAYS,
            args={"path": f"${TEST_REPORTS_ENV}"},
        ),
        PlannedStep(
            kind=StepKind.STORE_ARTIFACTS,
            name=ARTIFACTS_NAME,
            type="teardown",
            source="template",
            when=When.ALWAYS,
            args={"path": f"${ARTIFACTS_ENV}", "destination": f"${ARTIFACTS_ENV}"},
        ),
    ]
    steps.extend(
        PlannedStep(
            kind=StepKind.STORE_ARTIFACTS,
            name=f"{ARTIFACTS_NAME}: {path}",
            type="teardown",
            source="config",
            when=When.ALWAYS,
            args={"path": path},
        )
        for path in artifacts
    )
    return tuple(steps)


def expand_step_paths(plan: JobPlan, step: PlannedStep, env: Mapping[str, str]) -> PlannedStep:
    """The step with a leading `$NAME`/`${NAME}` of its `path` replaced by the node's value, in a
    1.0 plan only (its teardown names $CIRCLE_ARTIFACTS, whose folder each node has); any other
    step, or a variable the node does not set, is returned as it is (2.x paths are never
    interpolated, config.md 13 trap 9). Called by the runner before the step's handler."""
    raw = step.args.get("path")
    if plan.config_version != "1.0" or not isinstance(raw, str):
        return step
    found = _LEADING_VAR.match(raw)
    name = found and (found.group(1) or found.group(2))
    if not found or not name or name not in env:
        return step
    return replace(step, args={**step.args, "path": env[name] + raw[found.end() :]})


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
        checkout_step(),
        *(command_step(c, Phase.DEPENDENCIES) for c in inferred.dependencies),
        *(command_step(c, Phase.TEST) for c in inferred.test),
    ]
    plan = plan_1_0(job_name, tuple(steps), reponame=reponame)
    return Inference(plan=plan, inferred=inferred, message=nothing_message(inferred))


def plan_1_0(
    job_name: str,
    steps: tuple[PlannedStep, ...],
    *,
    reponame: str,
    environment: Mapping[str, str] | None = None,
    build_dir: str | None = None,
    parallelism: int = 1,
    artifacts: tuple[str, ...] = (),
) -> JobPlan:
    """A 1.0 JobPlan: bash without -e, the checkout in `~/<reponame>` (or build_dir inside it),
    `steps` then the teardown (teardown_steps, with `artifacts` = `general.artifacts`)."""
    workdir = f"~/{reponame}" + (f"/{build_dir.strip('/')}" if build_dir and build_dir.strip("/") else "")
    return JobPlan(
        name=job_name,
        steps=(*steps, *teardown_steps(artifacts)),
        environment=dict(environment or {}),
        working_directory=workdir,
        shell=SHELL_1_0,
        parallelism=parallelism,
        config_version="1.0",
        image=None,
    )


# ---------------------------------------------------------------- rules the runner applies


def no_tests(plan: JobPlan) -> bool:
    """config.md 11 rule 5: a 1.0 plan (circle.yml or inferred) with no test command ends
    `no_tests` when nothing else decides its outcome. Never true for 2.x plans."""
    return plan.config_version == "1.0" and not any(
        step.kind is StepKind.RUN and step.type == Phase.TEST for step in plan.steps
    )


def halts_on_failure(plan: JobPlan, step: PlannedStep) -> bool:
    """config.md 12.1: in a 1.0 plan a failed command outside the test phase stops the build
    (test commands all run; they are planned `when: always`)."""
    return plan.config_version == "1.0" and step.type != Phase.TEST
