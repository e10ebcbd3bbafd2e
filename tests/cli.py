"""Running the command line in a subprocess, and what a bad input must look like."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


def run_cli(*args, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``initbench ARGS`` in a fresh interpreter (tracebacks off, as a user sees it)."""
    env = {k: v for k, v in os.environ.items() if k != "INITBENCH_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "initbench.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def run_all(command: str, jobs: dict[str, list[str]], cwd) -> dict:
    """``initbench COMMAND ARGS`` for every named job, two at a time: name -> result."""
    with ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda args: run_cli(command, *args, cwd=cwd), jobs.values())
        return dict(zip(jobs, results, strict=True))


def assert_usage_error(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit code 2 and one line on stderr that names the problem."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("initbench: error: ") and message in lines[0], lines[0]
