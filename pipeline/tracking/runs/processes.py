"""Which process runs a run: recorded at its start, checked by the stale-runs maintenance.

A pid alone is not an identity (pids are reused), so the process's start time is recorded
with it: a pid that is alive but started at another time is another process.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pipeline.names import Tag


def process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux: field 22 of /proc/<pid>/stat, in clock ticks
    since boot); None when there is no such process or no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: count after it
    return text.rpartition(")")[2].split()[19]


def process_tags() -> dict[str, str]:
    """Tags naming this process: host, pid and (where known) its start time."""
    tags = {Tag.HOST: socket.gethostname(), Tag.PID: str(os.getpid())}
    if started := process_start(os.getpid()):
        tags[Tag.PID_STARTED] = started
    return tags


@dataclass(frozen=True)
class Liveness:
    """Whether the process a run recorded is still the one running it."""

    state: str  # "alive", "gone" or "unknown" (another host, or no pid recorded)
    reason: str


def liveness(tags: dict[str, str]) -> Liveness:
    host, pid = tags.get(Tag.HOST), tags.get(Tag.PID)
    if not host or not pid or not pid.isdigit():
        return Liveness("unknown", "no host and pid recorded")
    here = socket.gethostname()
    if host != here:
        return Liveness("unknown", f"pid {pid} on another host, {host}")
    started = process_start(int(pid))
    if started is None:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return Liveness("gone", f"pid {pid} on {host} is gone")
        except PermissionError:
            pass
        if Path("/proc").is_dir():  # Linux: a live pid always has its /proc entry
            return Liveness("gone", f"pid {pid} on {host} is gone")
        return Liveness("alive", f"pid {pid} on {host} is running")
    recorded = tags.get(Tag.PID_STARTED)
    if recorded and recorded != started:
        return Liveness("gone", f"pid {pid} on {host} is now another process")
    return Liveness("alive", f"pid {pid} on {host} is running")
