import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_asv_suite_runs_quickly(tmp_path):
    """A broken benchmark fails CI: one quick pass of a fast subset in this environment,
    on a machine asv has never seen (its machine file goes to an empty home folder)."""
    env = os.environ | {"HOME": str(tmp_path)}
    machine = subprocess.run(
        [sys.executable, "-m", "asv", "machine", "--yes", "--machine", "initbench-test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert machine.returncode == 0, machine.stdout + machine.stderr
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
            "--launch-method",
            "forkserver",  # torch imported once, not once per benchmark
            "--bench",
            "TimeSchemes|TrackNumbers|TrainStep|Probe",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
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
