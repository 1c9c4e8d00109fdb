"""What every benchmark records about the machine it ran on."""

import os
import platform


def machine_info():
    """``(cpu model name, number of CPUs visible)``."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return cpu, os.cpu_count()
