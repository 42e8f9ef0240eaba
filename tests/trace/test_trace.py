"""The trace matrix: register/risk loading, evidence from JUnit, and the --check rules."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.trace.errors import RegisterError
from appliance.trace.matrix import TraceMatrix, build_matrix, check, summary
from appliance.trace.register import load_register
from appliance.trace.risks import load_risks


def _tree(tmp_path: Path, *, test_outcome: str = "passed", risk_mitigation: str = "REQ-ACQ-001") -> Path:
    """A source tree with its own register (``docs/requirements``) and risk file (``docs/risks.yaml``)."""
    (tmp_path / "docs" / "requirements").mkdir(parents=True)
    (tmp_path / "docs" / "requirements" / "a.yaml").write_text(textwrap.dedent("""
        - id: REQ-ACQ-001
          clause: "standard, data acquisition"
          text: "Geometry from IOP/IPP."
          verification: [test]
        - id: REQ-PERF-001
          clause: "standard, performance"
          text: "Fast."
          verification: [benchmark]
    """))
    (tmp_path / "docs" / "risks.yaml").write_text(textwrap.dedent(f"""
        - id: RISK-001
          hazard: "wrong side"
          harm: "wrong-site surgery"
          severity: 5
          probability: 2
          mitigations: [{risk_mitigation}]
    """))
    (tmp_path / "appliance").mkdir()
    (tmp_path / "appliance" / "geo.py").write_text('REQ = "REQ-ACQ-001"\n')
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_geo.py").write_text('@pytest.mark.req("REQ-ACQ-001")\ndef test_x(): pass\n')
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "speed.py").write_text('REQUIREMENTS = ("REQ-PERF-001",)\n')
    body = {"passed": "", "failed": "<failure message='boom'/>", "skipped": "<skipped message='data absent'/>"}[
        test_outcome
    ]
    (tmp_path / "junit.xml").write_text(
        "<testsuites><testsuite><testcase classname='tests.test_geo' name='test_x'>"
        f"<properties><property name='req' value='REQ-ACQ-001'/></properties>{body}</testcase>"
        "</testsuite></testsuites>"
    )
    return tmp_path


def _matrix(root: Path) -> TraceMatrix:
    return build_matrix(root, root / "junit.xml", root / "docs" / "requirements", root / "docs" / "risks.yaml")


def _cli(root: Path, out: Path, *flags: str) -> int:
    return main(["trace", "--root", str(root), "--junit", str(root / "junit.xml"), "--out", str(out),
                 "--register", str(root / "docs" / "requirements"), "--risks", str(root / "docs" / "risks.yaml"),
                 *flags])  # fmt: skip


@pytest.mark.req("REQ-TRACE-200")
def test_register_refuses_malformed_and_duplicate_ids(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- {id: REQ-ACQ-1, clause: c, text: t, verification: [test]}\n")
    with pytest.raises(RegisterError, match="REQ-ACQ-001"):
        load_register(tmp_path)
    (tmp_path / "a.yaml").write_text("- {id: REQ-ACQ-001, clause: c, text: t, verification: [test]}\n")
    (tmp_path / "b.yaml").write_text("- {id: REQ-ACQ-001, clause: c, text: t, verification: [test]}\n")
    with pytest.raises(RegisterError, match="already defined"):
        load_register(tmp_path)


@pytest.mark.req("REQ-TRACE-200", "REQ-TRACE-204")
def test_project_register_and_risk_file_load() -> None:
    reg = load_register()
    risks = load_risks()
    assert len(reg) >= 5
    assert all(r.clause and r.text and r.verification for r in reg.values())
    for risk in risks.values():
        assert risk.mitigations, risk.id
        for rid in risk.mitigations:
            assert rid in reg, f"{risk.id} names {rid}, which is not in the register"


@pytest.mark.req("REQ-TRACE-202")
def test_matrix_links_code_tests_benchmarks_and_risks(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    m = _matrix(root)
    row = m.rows["REQ-ACQ-001"]
    assert row.code == ["appliance/geo.py"]
    assert row.test_files == ["tests/test_geo.py"]
    assert [t.outcome for t in row.tests] == ["passed"]
    assert row.risks == ["RISK-001"]
    assert m.rows["REQ-PERF-001"].benchmarks == ["bench/speed.py"]
    assert check(m, root) == []
    s = summary(m, [])
    assert (s["requirements"], s["verified"], s["risks"], s["unmitigated"]) == (2, 2, 1, [])


@pytest.mark.req("REQ-TRACE-203")
@pytest.mark.parametrize("outcome", ["failed", "skipped"])
def test_check_fails_when_mitigating_test_fails_or_skips(tmp_path: Path, outcome: str) -> None:
    root = _tree(tmp_path, test_outcome=outcome)
    problems = check(_matrix(root), root)
    assert any(p.startswith("RISK-001") for p in problems), problems


@pytest.mark.req("REQ-TRACE-203")
def test_check_fails_on_unknown_mitigation_and_missing_benchmark(tmp_path: Path) -> None:
    root = _tree(tmp_path, risk_mitigation="REQ-SAFE-999")
    (root / "bench" / "speed.py").write_text("# nothing declared\n")
    problems = check(_matrix(root), root)
    assert any("REQ-SAFE-999 is not in the register" in p for p in problems)
    assert any(p.startswith("REQ-PERF-001") and "benchmark" in p for p in problems)


@pytest.mark.req("REQ-TRACE-202", "REQ-TRACE-203")
def test_cli_json_and_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path)
    out = tmp_path / "build"
    assert _cli(root, out, "--json", "--check") == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {"requirements": 2, "verified": 2, "unverified": [], "risks": 1, "unmitigated": []}
    assert "REQ-ACQ-001" in (out / "trace.md").read_text()
    assert "<table>" in (out / "trace.html").read_text()
    bad = _tree(tmp_path / "bad", test_outcome="failed")
    assert _cli(bad, out, "--check") == 1


@pytest.mark.req("REQ-TRACE-202")
def test_cli_reads_the_shipped_register_and_risk_file_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["trace", "--root", str(tmp_path), "--out", str(tmp_path / "build"), "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["requirements"], data["risks"]) == (len(load_register()), len(load_risks()))


@pytest.mark.req("REQ-TRACE-201")
def test_unknown_requirement_id_fails_the_pytest_run(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        from helpers.trace_marks import check_requirement_marks

        def pytest_configure(config):
            config.addinivalue_line("markers", "req(*ids): requirement IDs")

        def pytest_collection_modifyitems(config, items):
            check_requirement_marks(items, {"REQ-ACQ-001": object()})
    """))
    (tmp_path / "test_x.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.req("REQ-ACQ-001")
        def test_known(): pass

        @pytest.mark.req("REQ-ACQ-999")
        def test_unknown(): pass
    """))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    tests_dir = str(Path(__file__).resolve().parents[1])  # holds helpers/
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))}
    bad = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 4, bad.stdout + bad.stderr  # pytest's usage-error exit code
    assert "REQ-ACQ-999" in bad.stdout + bad.stderr
    (tmp_path / "test_x.py").write_text(
        'import pytest\n\n@pytest.mark.req("REQ-ACQ-001")\ndef test_known(): pass\n'
    )
    good = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert good.returncode == 0, good.stdout + good.stderr
