"""The trace matrix: requirement -> code modules -> tests (with last results) -> benchmarks -> risks.

Pure functions over loaded data; :func:`build_matrix` gathers, :func:`check` lists the problems that make
``appliance trace --check`` fail, :func:`render_markdown` / :func:`render_html` write the report.
"""

from __future__ import annotations

import html
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from appliance.trace.evidence import (
    TestOutcome,
    parse_junit,
    scan_benchmarks,
    scan_code,
    scan_test_marks,
)
from appliance.trace.register import Requirement, load_register
from appliance.trace.risks import Risk, load_risks

#: Skips that mean "this machine has no GPU", not "the check did not run for a bad reason".
GPU_SKIP_MARKERS = ("no CUDA device",)


@dataclass
class RequirementRow:
    """Everything known about one requirement."""

    requirement: Requirement
    code: list[str] = field(default_factory=list)
    test_files: list[str] = field(default_factory=list)
    tests: list[TestOutcome] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)
    risks: list[str] = field(default_factory=list)

    def test_counts(self) -> dict[str, int]:
        """Outcome -> number of tests."""
        counts: dict[str, int] = defaultdict(int)
        for t in self.tests:
            counts[_effective_outcome(t)] += 1
        return dict(counts)


@dataclass
class TraceMatrix:
    """The whole matrix."""

    rows: dict[str, RequirementRow]
    risks: dict[str, Risk]
    junit_loaded: bool
    unknown_test_ids: list[str] = field(default_factory=list)


def _effective_outcome(t: TestOutcome) -> str:
    if t.outcome == "skipped" and any(m in t.message for m in GPU_SKIP_MARKERS):
        return "skipped_no_gpu"
    return t.outcome


def build_matrix(root: Path, junit: Path | None = None, register_dir: Traversable | None = None,
                 risk_file: Traversable | None = None) -> TraceMatrix:
    """Gather the register, the risk file (default: those shipped in ``appliance/trace/data``) and the evidence
    of the source tree at ``root``."""
    register = load_register(register_dir)
    risks = load_risks(risk_file)
    rows = {rid: RequirementRow(req) for rid, req in register.items()}
    for rid, mods in scan_code(root).items():
        if rid in rows:
            rows[rid].code = mods
    for rid, files in scan_test_marks(root).items():
        if rid in rows:
            rows[rid].test_files = files
    for rid, files in scan_benchmarks(root).items():
        if rid in rows:
            rows[rid].benchmarks = files
    unknown: list[str] = []
    if junit is not None:
        for t in parse_junit(junit):
            for rid in t.reqs:
                if rid in rows:
                    rows[rid].tests.append(t)
                else:
                    unknown.append(f"{t.nodeid}: {rid}")
    for risk in risks.values():
        for rid in risk.mitigations:
            if rid in rows:
                rows[rid].risks.append(risk.id)
    return TraceMatrix(rows, risks, junit is not None, unknown)


def check(matrix: TraceMatrix, root: Path) -> list[str]:
    """Problems that fail ``--check``; an empty list means the matrix is complete."""
    problems: list[str] = []
    for rid, row in sorted(matrix.rows.items()):
        req = row.requirement
        if not req.verification:
            problems.append(f"{rid}: has no verification")
        if "test" in req.verification and not row.test_files:
            problems.append(f"{rid}: says it is verified by a test, but no test carries @pytest.mark.req({rid!r})")
        if "benchmark" in req.verification and not row.benchmarks:
            problems.append(f"{rid}: says it is verified by a benchmark, but no bench/*.py declares it")
        if "inspection" in req.verification:
            if not req.inspection:
                problems.append(f"{rid}: verified by inspection but names no file to inspect")
            for rel in req.inspection:
                if not (root / rel).exists():
                    problems.append(f"{rid}: inspection file {rel} does not exist")
        if matrix.junit_loaded and "test" in req.verification and row.test_files:
            counts = row.test_counts()
            if counts.get("failed") or counts.get("error"):
                problems.append(f"{rid}: {counts.get('failed', 0) + counts.get('error', 0)} test(s) failed")
            if not row.tests:
                problems.append(f"{rid}: its tests were not in the JUnit report (not collected or deselected)")
    for line in matrix.unknown_test_ids:
        problems.append(f"test names an unknown requirement: {line}")
    for risk in sorted(matrix.risks.values(), key=lambda r: r.id):
        if not risk.mitigations:
            problems.append(f"{risk.id}: has no mitigation")
        for rid in risk.mitigations:
            mrow = matrix.rows.get(rid)
            if mrow is None:
                problems.append(f"{risk.id}: mitigation {rid} is not in the register")
                continue
            if matrix.junit_loaded and "test" in mrow.requirement.verification:
                bad = [t.nodeid for t in mrow.tests if _effective_outcome(t) in ("failed", "error", "skipped")]
                if bad:
                    problems.append(f"{risk.id}: mitigating test(s) of {rid} failed or were skipped: {bad[:3]}")
                if not any(_effective_outcome(t) == "passed" for t in mrow.tests):
                    problems.append(f"{risk.id}: no mitigating test of {rid} passed in this run")
    return problems


def summary(matrix: TraceMatrix, problems: list[str]) -> dict[str, Any]:
    """``{"requirements", "verified", "unverified", "risks", "unmitigated", "problems"}``."""
    unverified = sorted({p.split(":", 1)[0] for p in problems if p.startswith("REQ-")})
    unmitigated = sorted({p.split(":", 1)[0] for p in problems if p.startswith("RISK-")})
    return {
        "requirements": len(matrix.rows),
        "verified": len(matrix.rows) - len(unverified),
        "unverified": unverified,
        "risks": len(matrix.risks),
        "unmitigated": unmitigated,
        "problems": problems,
    }


def _row_cells(row: RequirementRow) -> list[str]:
    counts = row.test_counts()
    tests = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or (
        f"{len(row.test_files)} file(s), not run" if row.test_files else "-"
    )
    return [
        row.requirement.id,
        row.requirement.text,
        "<br>".join(row.code) or "-",
        tests,
        "<br>".join(row.benchmarks) or "-",
        ", ".join(row.risks) or "-",
    ]


HEADER = ["Requirement", "Text", "Code", "Tests", "Benchmarks", "Risks"]


def render_markdown(matrix: TraceMatrix, problems: list[str]) -> str:
    """The matrix as a Markdown document."""
    lines = ["# Trace matrix", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for rid in sorted(matrix.rows):
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in _row_cells(matrix.rows[rid])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "# Risks", "", "| Risk | Hazard | S x P | Mitigations |", "|---|---|---|---|"]
    for risk in sorted(matrix.risks.values(), key=lambda r: r.id):
        lines.append(f"| {risk.id} | {risk.hazard} | {risk.severity}x{risk.probability} | "
                     f"{', '.join(risk.mitigations)} |")
    lines += ["", "# Problems", ""] + ([f"- {p}" for p in problems] or ["none"])
    return "\n".join(lines) + "\n"


def render_html(matrix: TraceMatrix, problems: list[str]) -> str:
    """The matrix as a self-contained HTML page."""
    def row_html(cells: list[str]) -> str:
        return "<tr>" + "".join(f"<td>{html.escape(c).replace('&lt;br&gt;', '<br>')}</td>" for c in cells) + "</tr>"

    body = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in HEADER) + "</tr>"]
    body += [row_html(_row_cells(matrix.rows[rid])) for rid in sorted(matrix.rows)]
    body.append("</table><h2>Risks</h2><table><tr><th>Risk</th><th>Hazard</th><th>Harm</th><th>S x P</th>"
                "<th>Mitigations</th><th>Residual</th></tr>")
    for r in sorted(matrix.risks.values(), key=lambda r: r.id):
        body.append(row_html([r.id, r.hazard, r.harm, f"{r.severity}x{r.probability}", ", ".join(r.mitigations),
                              r.residual]))
    body.append("</table><h2>Problems</h2><ul>")
    body += [f"<li>{html.escape(p)}</li>" for p in problems] or ["<li>none</li>"]
    body.append("</ul>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Trace matrix</title><style>"
            "body{font-family:sans-serif}td,th{border:1px solid #999;padding:4px;vertical-align:top}"
            "table{border-collapse:collapse}</style></head><body><h1>Trace matrix</h1>"
            + "".join(body) + "</body></html>")
