"""How many CPU threads (or worker processes) a command computes with: the ``threads`` setting.

``threads: auto`` (the default of every compute command) must never oversubscribe the machine:

- ``OMP_NUM_THREADS`` set in the environment wins (the user, a scheduler or torchrun has spoken);
- under ``torchrun`` with several processes (``WORLD_SIZE`` > 1, see ``pipeline.core.distributed``) it is 1 per process,
  as torchrun's own default, so N processes never start N x cores threads;
- otherwise it is the number of physical cores this process may run on (CPU affinity, a cgroup CPU quota, and
  hyper-threads counted once).

A number is used as given. On a machine that other work keeps busy even ``auto`` is too many: contended OpenMP
threads can make training several times slower than one thread (README "Threads").
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

Threads = int | Literal["auto"]


def check_threads(threads: object, where: str = "threads") -> None:
    """ValueError unless ``threads`` is "auto" or an integer >= 1."""
    if threads == "auto":
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{where} must be auto or an integer >= 1, got {threads!r}")


def resolve_threads(threads: Threads, environ: dict[str, str] | None = None) -> int:
    """The thread count ``threads`` ("auto" or N) stands for in this process (see the module docstring)."""
    check_threads(threads)
    if threads != "auto":
        return int(threads)
    env = os.environ if environ is None else environ
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1  # malformed: pipeline.core.distributed reports it when the command joins the process group
    if world > 1:
        return 1
    return physical_cores()


def set_torch_threads(threads: Threads) -> int:
    """Resolve ``threads`` and make it torch's intra-op thread count; returns the count."""
    import torch  # lazy: commands without torch (prepare) use resolve_threads alone

    count = resolve_threads(threads)
    torch.set_num_threads(count)
    return count


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use, within its cgroup quota; at least 1."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            cores.add(("cpu", str(cpu)))  # no topology: count the logical CPU
    count = len(cores) or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(count, quota)) if quota else count


def _cgroup_cpu_quota() -> int | None:
    """CPUs a cgroup v2 quota (``cpu.max``: "QUOTA PERIOD" or "max PERIOD") allows, rounded up; None if unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None
