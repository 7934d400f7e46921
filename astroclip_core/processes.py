"""Who wrote something: this host's identity and whether a process on it still runs.

Temporary files (:mod:`astroclip_core.fsio`) and Dagster runs started by ``astroclip run`` are
tagged with :func:`host_id` and a pid, so that a later process can tell a live writer from a
dead one: on the same host, the writer is dead when no process with that pid runs, or when the
one that does started after the thing was written (the pid was reused).
"""

from __future__ import annotations

import functools
import os
import re
import socket


@functools.cache
def host_id() -> str:
    """This machine's name, plus its pid namespace where there is one (containers share hosts)."""
    name = re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname()) or "host"
    try:
        return f"{name}.{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), or None when no such process runs.

    Without /proc (macOS) only whether it exists is known; it then counts as started at 0.
    """
    if not os.path.exists("/proc/self/stat"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    if fields[0] in ("Z", "X"):  # killed and not yet reaped by its parent: gone
        return None
    ticks_since_boot = int(fields[19])  # field 22 of proc_pid_stat(5), "starttime"
    return boot_time() + ticks_since_boot / os.sysconf("SC_CLK_TCK")


def boot_time() -> float:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def is_dead(host: str, pid: int, since: float) -> bool | None:
    """Whether process ``pid`` of ``host``, known to run at Unix time ``since``, has ended.

    None when ``host`` is another machine (nothing can be known from here).
    """
    if host != host_id():
        return None
    started = process_start_time(pid)
    # 2 s of slack: boot time has whole seconds, and file systems may round mtimes to 2 s.
    return started is None or started > since + 2.0
