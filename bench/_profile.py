"""py-spy helpers shared by the benchmarks: record a process, rank its hottest frames."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """Start recording the gunicorn master and its workers as collapsed stacks."""
    return subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses"),
            *("--nonblocking", "--format", "raw", "--pid", str(pid)),
            *("--duration", str(int(seconds)), "--output", str(out)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def top_frames(collapsed: Path, count: int = 30) -> list[tuple[float, str]]:
    """(share of samples, frame) for the frames present in the most samples."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        total += int(samples)
        for frame in set(stack.split(";")):
            inclusive[frame] += int(samples)
    return [(n / total, frame) for frame, n in inclusive.most_common(count)] if total else []
