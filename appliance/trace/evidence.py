"""Evidence for the trace matrix, gathered from the tree and the last test run.

- code references: requirement IDs named in the packages' source (a Finding's ``requirement=``, docstrings);
- tests: ``@pytest.mark.req(...)`` read statically from ``tests/`` and, with outcomes, from the JUnit XML that
  ``tests/conftest.py`` enriches with ``req`` properties;
- benchmarks: IDs that ``bench/*.py`` declare (a ``REQUIREMENTS = (...)`` tuple or any mention of an ID).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

REQ_RE = re.compile(r"REQ-(?:ACQ|OUT|PERF|FUNC|HCI|TRACE|PRIV|SAFE|UPD)-\d{3,4}")
MARK_RE = re.compile(r"pytest\.mark\.req\(([^)]*)\)")
PACKAGES = ("appliance", "engines", "kernels", "ui")


@dataclass
class TestOutcome:
    """One test case from the JUnit report."""

    nodeid: str
    outcome: str  # passed | failed | error | skipped
    reqs: list[str] = field(default_factory=list)
    message: str = ""


def _py_files(root: Path, folders: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for folder in folders:
        base = root / folder
        if base.is_dir():
            out.extend(p for p in sorted(base.rglob("*.py")) if "vendor" not in p.parts)
    return out


def scan_code(root: Path) -> dict[str, list[str]]:
    """Requirement ID -> package modules (paths relative to ``root``) that name it."""
    refs: dict[str, set[str]] = defaultdict(set)
    for path in _py_files(root, PACKAGES):
        if path.parts[-2:] == ("trace", "evidence.py"):
            continue
        for rid in REQ_RE.findall(path.read_text(encoding="utf-8", errors="replace")):
            refs[rid].add(str(path.relative_to(root)))
    return {k: sorted(v) for k, v in refs.items()}


def scan_benchmarks(root: Path) -> dict[str, list[str]]:
    """Requirement ID -> benchmark scripts that declare it."""
    refs: dict[str, set[str]] = defaultdict(set)
    for path in _py_files(root, ("bench",)):
        for rid in REQ_RE.findall(path.read_text(encoding="utf-8", errors="replace")):
            refs[rid].add(str(path.relative_to(root)))
    return {k: sorted(v) for k, v in refs.items()}


def scan_test_marks(root: Path) -> dict[str, list[str]]:
    """Requirement ID -> test files whose ``pytest.mark.req`` names it (static, without outcomes)."""
    refs: dict[str, set[str]] = defaultdict(set)
    for path in _py_files(root, ("tests",)):
        text = path.read_text(encoding="utf-8", errors="replace")
        for args in MARK_RE.findall(text):
            for rid in REQ_RE.findall(args):
                refs[rid].add(str(path.relative_to(root)))
    return {k: sorted(v) for k, v in refs.items()}


def parse_junit(path: Path) -> list[TestOutcome]:
    """Test cases of a pytest JUnit XML report with their ``req`` properties."""
    tree = ElementTree.parse(path)
    out: list[TestOutcome] = []
    for case in tree.iter("testcase"):
        classname = case.get("classname", "")
        nodeid = f"{classname.replace('.', '/')}.py::{case.get('name', '')}" if classname else case.get("name", "")
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "failed" if tag == "failure" else tag
                message = el.get("message", "") or (el.text or "")
                break
        reqs = [p.get("value", "") for p in case.iter("property") if p.get("name") == "req"]
        out.append(TestOutcome(nodeid, outcome, reqs, message.strip()))
    return out
