"""The suite's scheduling record: seconds per module from a JUnit report, longest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.module_seconds import load_record, module_of, record_from_junit

pytestmark = pytest.mark.unit

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.e2e.test_pipeline" name="test_a" time="300.5"/>
<testcase classname="tests.e2e.test_pipeline" name="test_b" time="20.0"/>
<testcase classname="tests.unit.test_x" name="test_c[1-2]" time="0.25"/>
</testsuite></testsuites>
"""


def test_a_junit_report_gives_seconds_per_module(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(JUNIT)
    assert record_from_junit(junit) == {
        "tests/e2e/test_pipeline.py": 320.5,
        "tests/unit/test_x.py": 0.2,
    }


def test_node_ids_and_classnames_name_the_same_module() -> None:
    assert module_of("tests/unit/test_x.py::test_c[1-2]") == "tests/unit/test_x.py"
    assert module_of("tests.unit.test_x") == "tests/unit/test_x.py"


def test_the_committed_record_puts_the_e2e_pipeline_first() -> None:
    record = load_record()
    assert max(record, key=record.__getitem__) == "tests/e2e/test_pipeline.py"


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"tests/x.py": "soon"}'])
def test_an_unreadable_record_falls_back_to_module_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    import tests.module_seconds as module_seconds

    record = tmp_path / "module_seconds.json"
    record.write_text(text)
    monkeypatch.setattr(module_seconds, "RECORD", record)
    assert module_seconds.load_record() == {}
