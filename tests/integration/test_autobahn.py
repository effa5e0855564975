"""The Autobahn|Testsuite, quick subset, against tether's server and client.

The full run (517 cases per side) is `python tests/integration/autobahn/run.py --cases full`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).parent / "autobahn" / "run.py"
NO_PYTHON27 = 77

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.timeout(900)
def test_autobahn_quick(side: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--side", side, "--cases", "quick"],
        capture_output=True,
        text=True,
        timeout=880,
    )
    if proc.returncode == NO_PYTHON27:
        pytest.skip("Autobahn|Testsuite needs Python 2.7 and none was found: conformance NOT tested")
    summary = proc.stdout.strip()
    assert proc.returncode == 0, f"{summary}\n{proc.stderr[-3000:]}"
    assert "PASS" in summary
    assert "NON-STRICT" not in summary and "FAILED" not in summary
