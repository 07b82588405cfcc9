"""Stopping a child process as every fixture and bench script does: SIGTERM (each of our processes — redis-server,
nginx, the services — shuts down cleanly on it), then SIGKILL if it is still there after ``timeout`` seconds."""

from __future__ import annotations

import subprocess
from typing import Any


def terminate(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        reap(proc, timeout)


def reap(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """Wait for a process already sent SIGTERM (several stopping at once); SIGKILL it after ``timeout`` seconds."""
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
