"""Which process runs a run, and whether it is still the one running."""

from __future__ import annotations

import os
import socket
import subprocess

from pipeline.tracking.runs.processes import liveness, process_start, process_tags


def test_this_process_is_alive() -> None:
    tags = process_tags()
    assert tags["host"] == socket.gethostname()
    assert tags["pid"] == str(os.getpid())
    assert liveness(tags).state == "alive"


def test_a_dead_process_is_gone() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    tags = {"host": socket.gethostname(), "pid": str(proc.pid)}
    assert liveness(tags).state == "gone"


def test_a_reused_pid_is_another_process() -> None:
    tags = {**process_tags(), "pid.started": "1"}  # this pid, but started at another time
    assert process_start(os.getpid()) != "1"
    found = liveness(tags)
    assert found.state == "gone"
    assert "another process" in found.reason


def test_runs_from_other_hosts_are_left_alone() -> None:
    found = liveness({"host": "elsewhere", "pid": "1"})
    assert found.state == "unknown"
    assert liveness({}).state == "unknown"
