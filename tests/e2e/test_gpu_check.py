"""scripts/gpu_check.sh runs only where a GPU is; here its runs' overrides are validated as the script
writes them (``CHECK=config``), so a renamed config key fails CI, not the next borrowed GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]


def test_every_run_of_the_gpu_check_has_a_valid_config(tmp_path: Path) -> None:
    env = {**os.environ, "CHECK": "config", "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "all 9 configs validate" in proc.stdout


def test_a_bad_override_fails_the_check(tmp_path: Path) -> None:
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    script = script.replace("dpsda.answers=solved", "dpsda.answer=solved")
    (tmp_path / "gpu_check.sh").write_text(script)
    env = {**os.environ, "CHECK": "config", "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        ["bash", str(tmp_path / "gpu_check.sh"), str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "dpsda-fl: bad config" in proc.stdout
