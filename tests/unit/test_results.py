"""Reading test reports under a store_test_results path (spec config.md 9), on real files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from circlet.results import ENTITIES_REFUSED, ReportProblem, TestCase, collect, problem_to_api, to_api


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one(root: Path, rel: str, text: str) -> TestCase:
    write(root, rel, text)
    cases, problems = collect(root)
    assert problems == []
    assert len(cases) == 1
    return cases[0]


JUNIT_CASES = [
    pytest.param(
        '<testsuite name="S"><testcase classname="C" name="t" time="1.5" file="./a.py"/></testsuite>',
        {
            "classname": "C",
            "name": "t",
            "run_time": 1.5,
            "file": "a.py",
            "result": "success",
            "message": None,
        },
        id="plain-success-dot-slash-stripped",
    ),
    pytest.param(
        '<testsuite name="Suite"><testcase name="t"/></testsuite>',
        {"classname": "Suite", "file": None, "run_time": 0.0},
        id="classname-falls-back-to-suite-name-file-null-time-zero",
    ),
    pytest.param(
        '<testsuites><testcase name="t"/></testsuites>',
        {"classname": ""},
        id="no-suite-name-classname-empty",
    ),
    pytest.param(
        '<testsuite file="./s.rb"><testcase name="t" time="abc"/></testsuite>',
        {"file": "s.rb", "run_time": 0.0},
        id="file-from-suite-invalid-time",
    ),
    pytest.param(
        '<testsuites><testsuite name="outer" file="o.py"><testsuite name="inner">'
        '<testcase name="t"/></testsuite></testsuite></testsuites>',
        {"classname": "inner", "file": "o.py"},
        id="nested-suites-nearest-name-nearest-file",
    ),
    pytest.param(
        '<testsuite><testcase name="t"><failure message="boom">trace</failure></testcase></testsuite>',
        {"result": "failure", "message": "boom"},
        id="failure-message-attribute",
    ),
    pytest.param(
        '<testsuite><testcase name="t"><failure>trace text</failure></testcase></testsuite>',
        {"result": "failure", "message": "trace text"},
        id="failure-text-when-no-attribute",
    ),
    pytest.param(
        '<testsuite><testcase name="t"><error message="E"/></testcase></testsuite>',
        {"result": "error", "message": "E"},
        id="error",
    ),
    pytest.param(
        '<testsuite><testcase name="t"><skipped/></testcase></testsuite>',
        {"result": "skipped", "message": None},
        id="skipped-empty",
    ),
    pytest.param(
        '<testsuite><testcase name="t"><skipped message="s"/><failure message="f"/></testcase></testsuite>',
        {"result": "failure", "message": "f"},
        id="failure-wins-over-skipped",
    ),
    pytest.param(
        '<?xml version="1.0"?><ns:testsuite xmlns:ns="urn:x" name="N"><ns:testcase name="t"/></ns:testsuite>',
        {"classname": "N"},
        id="namespaced-tags",
    ),
]


@pytest.mark.parametrize(("xml", "expected"), JUNIT_CASES)
def test_junit_fields(tmp_path: Path, xml: str, expected: dict[str, object]) -> None:
    case = one(tmp_path, "junit/r.xml", xml)
    got = to_api(case)
    assert {key: got[key] for key in expected} == expected


def test_cases_keep_document_order_across_nested_suites(tmp_path: Path) -> None:
    write(
        tmp_path,
        "r.xml",
        '<testsuites><testsuite name="A"><testcase name="1"/><testsuite name="B"><testcase name="2"/>'
        '</testsuite><testcase name="3"/></testsuite><testsuite name="C"><testcase name="4"/></testsuite>'
        "</testsuites>",
    )
    cases, _ = collect(tmp_path)
    assert [(c.classname, c.name) for c in cases] == [("A", "1"), ("B", "2"), ("A", "3"), ("C", "4")]


def test_source_is_first_folder_below_path_else_unknown(tmp_path: Path) -> None:
    case = '<testsuite><testcase name="{}"/></testsuite>'
    write(tmp_path, "jest/deep/er/r.xml", case.format("jest"))
    write(tmp_path, "top.xml", case.format("top"))
    write(tmp_path, "rspec/r.xml", case.format("rspec"))
    cases, problems = collect(tmp_path)
    assert problems == []
    assert [(c.name, c.source, c.source_type) for c in cases] == [
        ("jest", "jest", "jest"),
        ("rspec", "rspec", "rspec"),
        ("top", "unknown", "unknown"),
    ]
    single, _ = collect(tmp_path / "rspec" / "r.xml")
    assert single[0].source == "unknown"


def test_hidden_folders_and_other_files_skipped_missing_path_empty(tmp_path: Path) -> None:
    write(tmp_path, ".cache/r.xml", '<testsuite><testcase name="hidden"/></testsuite>')
    write(tmp_path, "a/notes.txt", "not a report")
    write(tmp_path, "a/r.xml", '<testsuite><testcase name="seen"/></testsuite>')
    cases, problems = collect(tmp_path)
    assert [c.name for c in cases] == ["seen"]
    assert problems == []
    assert collect(tmp_path / "missing") == ([], [])


def test_invalid_xml_is_a_problem_and_other_reports_still_read(tmp_path: Path) -> None:
    write(tmp_path, "a/bad.xml", "<testsuite><testcase name='x'>")
    write(tmp_path, "a/good.xml", '<testsuite><testcase name="ok"/></testsuite>')
    write(tmp_path, "a/other.xml", "<coverage/>")
    cases, problems = collect(tmp_path)
    assert [c.name for c in cases] == ["ok"]
    assert [p.file for p in problems] == ["a/bad.xml", "a/other.xml"]
    assert problems[0].message.startswith("invalid XML: ")
    assert "line 1" in problems[0].message
    assert "root element is <coverage>" in problems[1].message
    assert problem_to_api(problems[0]) == {"file": "a/bad.xml", "message": problems[0].message}


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">\n' for n in range(1, 10)
    )
    + ']>\n<testsuite><testcase name="&lol9;"/></testsuite>\n'
)


def test_billion_laughs_refused_fast_without_expansion(tmp_path: Path) -> None:
    write(tmp_path, "evil/r.xml", BILLION_LAUGHS)
    write(tmp_path, "good/r.xml", '<testsuite><testcase name="ok"/></testsuite>')
    start = time.perf_counter()
    cases, problems = collect(tmp_path)
    assert time.perf_counter() - start < 1.0
    assert [c.name for c in cases] == ["ok"]
    assert problems == [ReportProblem(file="evil/r.xml", message=ENTITIES_REFUSED)]


def test_external_entity_refused(tmp_path: Path) -> None:
    write(
        tmp_path,
        "r.xml",
        '<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        '<testsuite><testcase name="&x;"/></testsuite>',
    )
    cases, problems = collect(tmp_path)
    assert cases == []
    assert len(problems) == 1 and problems[0].message.startswith("refused: ")


def test_huge_file_refused_unread(tmp_path: Path) -> None:
    write(tmp_path, "r.xml", "<testsuite>" + "<testcase name='t'/>" * 1000 + "</testsuite>")
    cases, problems = collect(tmp_path, max_file_bytes=1000)
    assert cases == []
    assert len(problems) == 1
    assert problems[0].message.startswith("refused: the file is ")
    assert "1000-byte limit" in problems[0].message


def test_case_cap(tmp_path: Path) -> None:
    write(tmp_path, "a.xml", "<testsuite>" + '<testcase name="t"/>' * 5 + "</testsuite>")
    write(tmp_path, "b.xml", '<testsuite><testcase name="u"/></testsuite>')
    cases, problems = collect(tmp_path, max_cases=3)
    assert len(cases) == 3
    assert [p.file for p in problems] == ["a.xml", "b.xml"]


def test_link_outside_the_results_path_refused(tmp_path: Path) -> None:
    outside = write(tmp_path, "outside.xml", '<testsuite><testcase name="secret"/></testsuite>')
    results = tmp_path / "results"
    results.mkdir()
    (results / "r.xml").symlink_to(outside)
    cases, problems = collect(results)
    assert cases == []
    assert problems[0].message.startswith("refused: the file is a link")


CUCUMBER = [
    {
        "name": "Invitations",
        "uri": "./features/inv.feature",
        "elements": [
            {"type": "background", "name": "bg", "steps": [{"result": {"status": "passed"}}]},
            {
                "name": "Accepting",
                "type": "scenario",
                "steps": [
                    {"result": {"status": "passed", "duration": 1_500_000_000}},
                    {"result": {"status": "passed", "duration": 500_000_000}},
                ],
            },
            {
                "name": "Failing",
                "steps": [
                    {"result": {"status": "passed", "duration": 1}},
                    {"result": {"status": "failed", "duration": 1, "error_message": "first"}},
                    {"result": {"status": "failed", "error_message": "second"}},
                ],
            },
            {
                "name": "Pending",
                "steps": [{"result": {"status": "pending"}}, {"result": {"status": "skipped"}}],
            },
        ],
    }
]


def test_cucumber(tmp_path: Path) -> None:
    write(tmp_path, "cuke/out.cucumber", json.dumps(CUCUMBER))
    cases, problems = collect(tmp_path)
    assert problems == []
    assert [to_api(c) for c in cases] == [
        {
            "message": None,
            "file": "features/inv.feature",
            "source": "cucumber",
            "run_time": 2.0,
            "result": "success",
            "name": "Accepting",
            "classname": "Invitations",
            "source_type": "cucumber",
        },
        {
            "message": "first",
            "file": "features/inv.feature",
            "source": "cucumber",
            "run_time": 2e-9,
            "result": "failure",
            "name": "Failing",
            "classname": "Invitations",
            "source_type": "cucumber",
        },
        {
            "message": None,
            "file": "features/inv.feature",
            "source": "cucumber",
            "run_time": 0.0,
            "result": "skipped",
            "name": "Pending",
            "classname": "Invitations",
            "source_type": "cucumber",
        },
    ]


@pytest.mark.parametrize(
    ("text", "start"),
    [
        pytest.param("{not json", "invalid JSON: ", id="invalid-json"),
        pytest.param('{"a": 1}', "not a Cucumber JSON report: ", id="wrong-shape"),
    ],
)
def test_bad_cucumber(tmp_path: Path, text: str, start: str) -> None:
    write(tmp_path, "x.cucumber", text)
    cases, problems = collect(tmp_path)
    assert cases == []
    assert problems[0].message.startswith(start)


def test_to_api_has_the_seed_keys(tmp_path: Path) -> None:
    case = one(
        tmp_path, "rspec/r.xml", '<testsuite><testcase classname="c" name="n" time="0.25"/></testsuite>'
    )
    assert set(to_api(case)) >= {"message", "file", "source", "run_time", "result", "name", "classname"}
    json.dumps(to_api(case))
