"""Debian's nginx on loopback with deploy/nginx's edge configuration: rendered with the ports of this run, a private
prefix for its pid, temp files and error log, in the foreground. Used by tests/e2e/test_edge.py and bench/edge.py."""

from __future__ import annotations

import os
import re
import shutil
import socket
import string
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from tests.processes import terminate

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "deploy" / "nginx" / "templates" / "edge.conf.template"
NGINX = "/usr/sbin/nginx"

# What the official image's /etc/nginx/nginx.conf gives the rendered file around it, with private paths.
MAIN = """
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
{user}
worker_processes {workers};
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{http}
}}
"""


def main_conf(directory: Path, http: str, *, name: str = "nginx", workers: str = "1") -> str:
    """An nginx main configuration keeping its pid, error log (``{name}-error.log``) and temp files in
    ``directory``, around the directives ``http`` of its http block (also bench/edge.py's static upstream)."""
    # Run as whoever we are: root's workers would otherwise drop to `nobody`, who cannot use this private dir.
    user = "user root root;" if os.geteuid() == 0 else ""
    return MAIN.format(dir=directory, name=name, user=user, workers=workers, http=http)


_ROUTE_UPSTREAM = re.compile(r"^upstream api_notes \{.*?^\}\n", re.M | re.S)
_ROUTE_LOCATION = re.compile(r"^ +location /api/notes/ \{.*?^ +\}\n", re.M | re.S)


def render(port: int, bff: str, routes: Mapping[str, str]) -> str:
    """The template with its variables filled in; ``routes`` maps route names to ``host:port`` and must cover the
    template's own (``notes``, ``live``). The ``notes`` upstream and location are repeated for every other route, as
    the template tells ops to do."""
    text = TEMPLATE.read_text()
    upstream, location = _ROUTE_UPSTREAM.search(text), _ROUTE_LOCATION.search(text)
    assert upstream and location, "the template's notes route blocks moved"

    def per_route(block: str) -> str:
        extra = [n for n in routes if f"location /api/{n}/ " not in text]
        return "".join(block.replace("notes", n).replace("NOTES", n.upper()) for n in extra)

    extra_upstreams, extra_locations = per_route(upstream.group(0)), per_route(location.group(0))
    text = text[: location.end()] + extra_locations + text[location.end() :]
    text = text[: upstream.end()] + extra_upstreams + text[upstream.end() :]
    variables = {"EDGE_PORT": f"127.0.0.1:{port}", "BFF_ADDR": bff}
    variables.update({f"{name.upper()}_ADDR": addr for name, addr in routes.items()})
    rendered = string.Template(text).safe_substitute(variables)
    left = re.findall(r"\$\{(\w+)\}", rendered)
    assert not left, f"the template's routes need addresses too: {left}"
    return rendered


class Edge:
    """nginx in the foreground (``-g 'daemon off;'``) with the rendered edge configuration."""

    def __init__(self, port: int, bff: str, routes: Mapping[str, str], workers: str = "1") -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="jwt-bff-nginx-"))
        (self.dir / "edge.conf").write_text(render(port, bff, routes))
        (self.dir / "nginx.conf").write_text(main_conf(self.dir, f"    include {self.dir}/edge.conf;", workers=workers))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        path = self.dir / "nginx-error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def command(self, *extra: str) -> list[str]:
        if not os.access(NGINX, os.X_OK):
            raise FileNotFoundError(f"{NGINX} is missing: apt-get install nginx (.ci/run does)")
        conf = str(self.dir / "nginx.conf")
        return [NGINX, "-p", str(self.dir), "-e", str(self.dir / "nginx-error.log"), "-c", conf, *extra]

    def check(self) -> None:
        """``nginx -t``: the configuration parses and every directive is accepted."""
        out = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{out.stderr}")

    def start(self, timeout: float = 10.0) -> Edge:
        self.check()
        self.proc = subprocess.Popen(
            self.command("-g", "daemon off;"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            # nginx writes its pid file once it listens; the port alone could be someone else's
            if (self.dir / "nginx.pid").exists() and self.proc.poll() is None:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return self
                except OSError:
                    pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start on {self.port}:\n{self.error_log}")
            time.sleep(0.02)

    def stop(self) -> None:
        terminate(self.proc)  # SIGTERM: fast shutdown of master and workers
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
