"""How close a sweep's printed estimate comes to the time it takes.

    python scripts/estimate_check.py                       # quick, default, atlas-cpu; idle
    python scripts/estimate_check.py --presets quick,default --busy
    python scripts/estimate_check.py --presets atlas-cpu --keep work   # work/atlas-cpu stays

Runs ``initbench sweep --preset P --device cpu`` for each preset into a fresh folder and
reads its output as it comes: when the sweep prints "about T left, as the first N runs
took", this notes the time since the start and T; when the sweep ends, the time it took.
It prints, per preset, the estimate, the time the rest really took, and their ratio (the
target: between 0.5 and 2). ``--busy`` runs a second process that keeps both cores busy
with matmuls for the whole sweep (the machine as loaded as by a second job).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNITS = {"s": 1, "minutes": 60, "hours": 3600, "days": 86400}
PRINTED = re.compile(r"about ([\d,.]+) (s|minutes|hours|days) left, as the first ([\d,]+) runs")
BUSY = "import torch\na = torch.randn(512, 512)\nwhile True:\n    a @ a\n"


def check(preset: str, folder: Path) -> dict:
    command = ["initbench", "sweep", "--preset", preset, "--out", str(folder), "--device", "cpu"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    found = None
    for line in process.stdout:
        match = PRINTED.search(line)
        if match and found is None:
            value, unit, runs = match.groups()
            found = (time.perf_counter() - start, float(value.replace(",", "")) * UNITS[unit])
            found += (int(runs.replace(",", "")),)
    if process.wait():
        sys.exit(f"{' '.join(command)} failed")
    total = time.perf_counter() - start
    at, estimate, runs = found
    return {
        "preset": preset,
        "timed runs": runs,
        "printed at": at,
        "estimate": estimate,
        "real": total - at,
        "ratio": estimate / (total - at),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="quick,default,atlas-cpu")
    parser.add_argument("--busy", action="store_true", help="with a second job on the cores")
    parser.add_argument("--keep", type=Path, help="sweep into KEEP/PRESET and keep it there")
    args = parser.parse_args()
    load = subprocess.Popen([sys.executable, "-c", BUSY]) if args.busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            where = args.keep or Path(tmp)
            rows = [check(p, where / p) for p in args.presets.split(",")]
    finally:
        if load is not None:
            load.kill()
    machine = "busy (a second job on both cores)" if args.busy else "idle"
    print(f"\nestimates against real time, machine {machine}:")
    print("| preset | timed runs | printed at | estimate left | real left | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['preset']} | {r['timed runs']:,} | {r['printed at']:.0f} s | "
            f"{r['estimate']:.0f} s | {r['real']:.0f} s | {r['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
