"""Stopping a child process as every fixture and bench script does: SIGTERM (each of our processes — redis-server,
nginx, the services — shuts down cleanly on it), then SIGKILL if it is still there after ``timeout`` seconds."""

from __future__ import annotations

import subprocess
from typing import Any


def terminate(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
