"""How long each test module took in a recorded run, for scheduling the longest first.

``make test`` sends whole modules to the xdist workers (``--dist loadscope``); handing out the
longest ones first keeps a long module from starting last and running alone at the end.
Refresh the record from a run's JUnit XML:

    python -m pytest -n auto --dist loadscope --junitxml=/tmp/junit.xml
    python -m tests.module_seconds /tmp/junit.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

RECORD = Path(__file__).with_name("module_seconds.json")
UNKNOWN_PER_TEST_S = 1.0  # a module missing from the record: this per test


def module_of(nodeid_or_classname: str) -> str:
    """``tests/unit/test_x.py`` from a node id or a JUnit ``classname`` (``tests.unit.test_x``)."""
    head = nodeid_or_classname.split("::")[0]
    return head if head.endswith(".py") else head.replace(".", "/") + ".py"


def record_from_junit(junit: Path) -> dict[str, float]:
    """Seconds per module (setup + call + teardown of its tests) in a JUnit XML report."""
    seconds: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).iter("testcase"):
        seconds[module_of(case.get("classname", ""))] += float(case.get("time", 0.0))
    return {module: round(total, 1) for module, total in sorted(seconds.items())}


def load_record() -> dict[str, float]:
    """The committed record (empty if absent or unreadable: the order falls back to sizes)."""
    try:
        record = json.loads(RECORD.read_text())
        return {str(k): float(v) for k, v in record.items()}
    except (OSError, ValueError, TypeError, AttributeError):  # unreadable, not JSON, not numbers
        return {}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.module_seconds JUNIT_XML", file=sys.stderr)
        return 2
    RECORD.write_text(json.dumps(record_from_junit(Path(argv[0])), indent=1) + "\n")
    print(f"wrote {RECORD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
