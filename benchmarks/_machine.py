"""What every benchmark prints about the machine it ran on, and its table format.

Shared by the scripts in this folder (run as ``python benchmarks/<script>.py``, which puts this folder on
``sys.path``).
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
import time

import torch
import torchvision

import torch_rlprune as rlp


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OtherLoad:
    """How much of the machine's CPU time other processes used between ``start()`` and ``share()``.

    Read from ``/proc/stat`` (all CPUs) minus the CPU time of this process and its waited-for children; ``None`` where ``/proc/stat`` is missing.
    On 2 cores a busy neighbour makes OpenMP threads wait for each other, which can slow convolutions many times
    over, so a table measured under load says so.
    """

    def __init__(self) -> None:
        self.start()

    @staticmethod
    def _busy() -> tuple[float, int] | None:
        try:
            with open("/proc/stat") as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        fields = [int(v) for v in lines[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        cpus = sum(1 for line in lines if re.match(r"cpu\d", line))
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), cpus

    def start(self) -> None:
        self._t0, self._own0, self._busy0 = time.perf_counter(), sum(os.times()[:4]), self._busy()

    def share(self) -> float | None:
        busy = self._busy()
        if busy is None or self._busy0 is None:
            return None
        wall = time.perf_counter() - self._t0
        other = busy[0] - self._busy0[0] - (sum(os.times()[:4]) - self._own0)
        return max(0.0, other) / (wall * busy[1])

    def report(self) -> str:
        share = self.share()
        if share is None:
            return "  (no /proc/stat: could not check for other load)"
        warning = "  WARNING: the machine was not quiet, timings above are unreliable" if share > 0.05 else ""
        return f"  other processes used {share:.0%} of the machine's CPU time while this was measured.{warning}"


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()



def print_header(script: str) -> None:
    """The script, the time, the CPU, the thread count and the versions, as the first lines of its output."""
    print(f"{script}  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"CPU: {cpu_model()}, {available_cores()} cores available; torch threads: {torch.get_num_threads()}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"torch_rlprune {rlp.__version__}")  # fmt: skip
