"""The machine a benchmark ran on, for its results file: ``from machine import cpu_name, describe``.

Benchmarks run as scripts (``python benchmarks/NAME.py``), so this folder is on
``sys.path`` and they import it by its bare name.
"""

import os
import platform
from pathlib import Path


def cpu_name():
    """The CPU's model name from /proc/cpuinfo, or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe(load=False):
    """``"CPU, N cores, OS"``, with the 1-minute load average when ``load`` (a shared machine's noise)."""
    text = f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}"
    return text + (f", load average {os.getloadavg()[0]:.1f} at the start" if load else "")
