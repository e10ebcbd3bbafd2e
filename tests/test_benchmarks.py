import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_asv_suite_runs_quickly():
    """A broken benchmark fails CI: one quick pass of a fast subset in this environment."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "asv",
            "run",
            "--python=same",
            "--quick",
            "--dry-run",
            "--show-stderr",
            "--machine",
            "initbench-test",
            "--bench",
            "TimeSchemes|TrackNumbers|TrainStep",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "failed" not in out.lower(), out
    assert "TrackNumbers" in out


def test_speed_ratio_script_runs():
    result = subprocess.run(
        [sys.executable, "benchmarks/perf_ratio.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "speedup" in result.stdout and "ratio" in result.stdout
