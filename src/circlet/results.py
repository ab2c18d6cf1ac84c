"""Test reports found under a `store_test_results` path -> test-case records (spec config.md 9).

`collect(path)` reads every `*.xml` (JUnit) and `*.cucumber` (Cucumber JSON) file below a file or
folder and returns the test cases plus the problems met on the way. It never raises for a bad
report: a report that cannot be read, is too big, is not well-formed or declares XML entities
becomes a `ReportProblem` (the API's `exceptions`) and the other reports are still read.

Security: XML goes through defusedxml with entity declarations and external references
forbidden, so a "billion laughs" file is refused at its first declaration instead of expanded.
Files over `max_file_bytes` are refused before reading, links pointing outside the results
path are refused, and at most `max_cases` records are kept. Blocking file I/O; call from a worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

Result = Literal["success", "failure", "error", "skipped"]

MIB = 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 50 * MIB
DEFAULT_MAX_CASES = 200_000
UNKNOWN_SOURCE = "unknown"
CUCUMBER_SOURCE = "cucumber"
REPORT_SUFFIXES = (".xml", ".cucumber")
# A testcase's result comes from its first child of these kinds, in this order of precedence.
RESULT_CHILDREN: tuple[tuple[str, Result], ...] = (
    ("failure", "failure"),
    ("error", "error"),
    ("skipped", "skipped"),
)
ENTITIES_REFUSED = "refused: the file declares XML entities"
EXTERNAL_REFUSED = "refused: the file references external resources"
OUTSIDE_REFUSED = "refused: the file is a link pointing outside the results path"


@dataclass(frozen=True, kw_only=True)
class TestCase:
    """One test-case record, as stored and as served by `GET .../:build_num/tests`."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    classname: str
    file: str | None
    result: Result
    run_time: float  # seconds
    message: str | None
    source: str
    source_type: str


@dataclass(frozen=True, kw_only=True)
class ReportProblem:
    """A report that could not be used; `file` is relative to the results path (its name for a file)."""

    file: str
    message: str


def to_api(case: TestCase) -> dict[str, Any]:
    """The record in the v1.1 `/tests` shape (seed keys first, then `source_type`)."""
    return {
        "message": case.message,
        "file": case.file,
        "source": case.source,
        "run_time": case.run_time,
        "result": case.result,
        "name": case.name,
        "classname": case.classname,
        "source_type": case.source_type,
    }


def problem_to_api(problem: ReportProblem) -> dict[str, Any]:
    """A problem in the shape of one `exceptions` entry."""
    return {"file": problem.file, "message": problem.message}


def collect(
    path: Path,
    *,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_cases: int = DEFAULT_MAX_CASES,
) -> tuple[list[TestCase], list[ReportProblem]]:
    """Every test case of every report below `path` (a file or a folder), in a stable order.

    Files are visited sorted by relative path; hidden folders are skipped. A missing path gives
    no cases and no problems (the caller warns). Never raises for a bad report.
    """
    cases: list[TestCase] = []
    problems: list[ReportProblem] = []
    for file, shown, source in _report_files(path):
        if len(cases) >= max_cases:
            problems.append(ReportProblem(file=shown, message=f"skipped: over {max_cases} test cases"))
            continue
        try:
            found, problem = _read_report(file, path, source, max_file_bytes)
        except Exception as exc:  # a parser bug must not fail the step; report it instead
            found, problem = [], f"unreadable: {type(exc).__name__}: {exc}"
        if problem is not None:
            problems.append(ReportProblem(file=shown, message=problem))
        room = max_cases - len(cases)
        if len(found) > room:
            problems.append(
                ReportProblem(file=shown, message=f"truncated: only the first {max_cases} test cases kept")
            )
        cases.extend(found[:room])
    return cases, problems


def _report_files(path: Path) -> Iterator[tuple[Path, str, str]]:
    """(file, name shown in problems, source) for each report below `path`, sorted."""
    if path.is_file():
        if path.name.endswith(REPORT_SUFFIXES):
            yield path, path.name, UNKNOWN_SOURCE
        return
    if not path.is_dir():
        return
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(path):  # does not follow linked folders
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.endswith(REPORT_SUFFIXES):
                full = Path(folder, name)
                found.append((full.relative_to(path).as_posix(), full))
    for rel, full in sorted(found):
        parts = rel.split("/")
        yield full, rel, parts[0] if len(parts) > 1 else UNKNOWN_SOURCE


def _read_report(file: Path, root: Path, source: str, max_bytes: int) -> tuple[list[TestCase], str | None]:
    """The cases of one report, or the problem that stopped it (never raises)."""
    try:
        if file.is_symlink() and not file.resolve().is_relative_to(root.resolve()):
            return [], OUTSIDE_REFUSED
        size = file.stat().st_size
        if size > max_bytes:
            return [], f"refused: the file is {size} bytes, over the {max_bytes}-byte limit"
        with file.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        return [], f"unreadable: {exc.strerror or exc}"
    if len(data) > max_bytes:  # grew since stat
        return [], f"refused: the file is over the {max_bytes}-byte limit"
    if file.name.endswith(".cucumber"):
        return _parse_cucumber(data)
    return _parse_junit(data, source)


def _strip_dot_slash(value: str | None) -> str | None:
    if value is None:
        return None
    while value.startswith("./"):
        value = value[2:]
    return value


def _local(tag: Any) -> str:
    """An element's tag without its namespace (comments and PIs have non-string tags)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 0.0
    return seconds if seconds == seconds and abs(seconds) != float("inf") else 0.0  # NaN/inf -> 0


def _parse_junit(data: bytes, source: str) -> tuple[list[TestCase], str | None]:
    try:
        root = defusedxml.ElementTree.fromstring(data, forbid_dtd=False, forbid_entities=True)
    except defusedxml.EntitiesForbidden:
        return [], ENTITIES_REFUSED
    except (defusedxml.ExternalReferenceForbidden, defusedxml.DTDForbidden):
        return [], EXTERNAL_REFUSED
    except ParseError as exc:
        return [], f"invalid XML: {exc}"
    except defusedxml.DefusedXmlException as exc:
        return [], f"refused: {exc}"
    if _local(root.tag) not in ("testsuites", "testsuite"):
        return [], f"not a JUnit report: the root element is <{_local(root.tag)}>"
    return list(_junit_cases(root, source)), None


def _junit_cases(root: Element, source: str) -> Iterator[TestCase]:
    """Depth-first, document order, without recursion (suites may nest deeply)."""
    # stack of (element, nearest suite name, nearest suite file)
    stack: list[tuple[Element, str | None, str | None]] = [(root, None, None)]
    while stack:
        element, suite_name, suite_file = stack.pop()
        tag = _local(element.tag)
        if tag == "testcase":
            yield _junit_case(element, suite_name, suite_file, source)
            continue
        if tag in ("testsuite", "testsuites"):
            if tag == "testsuite":
                suite_name = element.get("name", suite_name)
                suite_file = element.get("file", suite_file)
            stack.extend((child, suite_name, suite_file) for child in reversed(element))


def _junit_case(case: Element, suite_name: str | None, suite_file: str | None, source: str) -> TestCase:
    result: Result = "success"
    message: str | None = None
    children = {_local(child.tag): child for child in reversed(case)}  # first of each kind wins
    for tag, outcome in RESULT_CHILDREN:
        child = children.get(tag)
        if child is not None:
            result = outcome
            message = child.get("message", child.text)
            break
    return TestCase(
        name=case.get("name", ""),
        classname=case.get("classname") or suite_name or "",
        file=_strip_dot_slash(case.get("file", suite_file)),
        result=result,
        run_time=_seconds(case.get("time")),
        message=message,
        source=source,
        source_type=source,
    )


def _parse_cucumber(data: bytes) -> tuple[list[TestCase], str | None]:
    try:
        features = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        return [], f"invalid JSON: {exc}"
    try:
        return [case for feature in features for case in _cucumber_feature(feature)], None
    except (TypeError, AttributeError, KeyError, ValueError) as exc:
        return [], f"not a Cucumber JSON report: {type(exc).__name__}: {exc}"


def _cucumber_feature(feature: dict[str, Any]) -> Iterator[TestCase]:
    for scenario in feature.get("elements") or []:
        if scenario.get("type") == "background":
            continue
        statuses: list[str] = []
        run_time = 0.0
        message: str | None = None
        for step in scenario.get("steps") or []:
            result = step.get("result") or {}
            status = str(result.get("status", ""))
            statuses.append(status)
            run_time += _seconds(result.get("duration", 0)) / 1e9
            if status == "failed" and message is None:
                error = result.get("error_message")
                message = None if error is None else str(error)
        outcome: Result = "success"
        if "failed" in statuses:
            outcome = "failure"
        elif statuses and all(s in ("skipped", "pending") for s in statuses):
            outcome = "skipped"
        yield TestCase(
            name=str(scenario.get("name", "")),
            classname=str(feature.get("name", "")),
            file=_strip_dot_slash(feature.get("uri")),
            result=outcome,
            run_time=run_time,
            message=message,
            source=CUCUMBER_SOURCE,
            source_type=CUCUMBER_SOURCE,
        )
