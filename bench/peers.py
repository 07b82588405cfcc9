"""Our paths against the peers, side by side in one run: what turning a session cookie into a token costs.

    python bench/peers.py                          # ~2 minutes; needs wrk, redis-server, nginx, caddy, apache2 +
                                                   # libapache2-mod-auth-openidc (Debian's packages)
    python bench/peers.py --chart docs/benchmarks-peers.png --json peers.json
    python bench/peers.py --upstream echo          # an nginx upstream echoing the token: no upstream ceiling
    python bench/peers.py --bff-workers 2          # bff serve --workers 2: a process per core, as Apache and nginx
    python bench/peers.py --only nginx_auth,nginx_auth_uds   # nginx asking over loopback TCP or a Unix socket

One Redis, one auth server, and one upstream for every path: the sample resource server (one Python process), whose
``GET /me`` verifies the token and answers its ``sub``. In front of it, each path is driven by ``wrk -t1 -c32`` (1 s
warm-up, then ``--seconds``), after one request has checked that it reached the upstream as the logged-in user:

* nginx alone, a fixed ``Authorization`` (the user's real token) and no session at all: the floor;
* the BFF's own proxy (``bff serve``, ``/api/notes/me`` with the session cookie);
* nginx + ``/bff/auth`` (deploy/nginx's edge configuration, ``auth_request``), nginx relaying the body;
* the same over a Unix socket (``bff serve --uds``, ``BFF_TRUSTED_PROXIES=unix``: a second BFF process and nginx);
* Caddy ``forward_auth`` + ``/bff/auth`` (deploy/caddy/Caddyfile);
* Apache + mod_auth_openidc, logged in through it like a browser, its session in the same Redis
  (``OIDCCacheType redis``), the access token passed upstream as ``Authorization: Bearer``, the provider's metadata
  written into the configuration (no discovery fetch: its best case).

For each: req/s, p50, p99, CPU microseconds per request of the processes in front of the upstream (user + system time
from /proc: nginx's, Caddy's or Apache's master and workers, plus the BFF's where it answers), and Redis commands per
request (``INFO commandstats`` around the measured run). The CPU figure is the steadier one on a shared machine.

With ``--upstream echo`` every path's upstream is a static nginx answering ``GET /me`` with the ``Authorization``
header it got (the check then reads the user from that token): the resource server, one Python process, no longer
caps every path's requests per second, and what is left is the paths' own cost.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.edge import NGINX_ALONE  # noqa: E402
from bench.harness import (  # noqa: E402
    REPO,
    Proc,
    Stack,
    _FormParser,
    bff_env,
    code_flow_tokens,
    cpu_seconds,
    free_port,
    login,
    processes,
    redis_commandstats,
    service,
    start_redis,
    wait_http,
    wrk,
)
from bench.run import PASSWORD, USER, start_rs  # noqa: E402
from tests.edge import NGINX, Edge, main_conf  # noqa: E402

APACHE = "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")
CADDYFILE = REPO / "deploy" / "caddy" / "Caddyfile"
LABELS = {
    "nginx": "nginx alone, fixed token (the floor)",
    "bff": "jwt-bff proxy (bff serve)",
    "nginx_auth": "nginx + /bff/auth",
    "nginx_auth_uds": "nginx + /bff/auth, Unix socket",
    "caddy_auth": "Caddy forward_auth + /bff/auth",
    "apache": "Apache + mod_auth_openidc",
}
APACHE_CONF = """
ServerRoot "{dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
ErrorLog {dir}/error.log
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authn_core_module {modules}/mod_authn_core.so
LoadModule authz_user_module {modules}/mod_authz_user.so
LoadModule headers_module {modules}/mod_headers.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
LoadModule auth_openidc_module {modules}/mod_auth_openidc.so
# Debian's mpm_event defaults; keep-alive without a request cap (as nginx's and Caddy's here)
StartServers 2
ThreadsPerChild 25
MaxRequestWorkers 150
KeepAlive On
MaxKeepAliveRequests 0

# The provider's metadata written out: no discovery document fetched (mod_auth_openidc's best case)
# (mod_auth_openidc takes only https endpoints: the auth server's are reached through a TLS front, bench only)
OIDCProviderIssuer {issuer}
OIDCProviderAuthorizationEndpoint {tls}/oauth/authorize
OIDCProviderTokenEndpoint {tls}/oauth/token
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCProviderJwksUri {tls}/.well-known/jwks.json
OIDCSSLValidateServer Off
OIDCClientID apache
OIDCClientSecret {secret}
OIDCRedirectURI http://127.0.0.1:{port}/redirect_uri
OIDCCryptoPassphrase {passphrase}
OIDCScope "openid notes:read notes:write"
OIDCPKCEMethod S256
OIDCSessionType server-cache
OIDCCacheType redis
OIDCRedisCacheServer 127.0.0.1:{redis_port}
OIDCPassClaimsAs environment

<Location /redirect_uri>
    AuthType openid-connect
    Require valid-user
</Location>
<Location /api/notes/>
    AuthType openid-connect
    Require valid-user
    RequestHeader set Authorization "Bearer %{{OIDC_access_token}}e"
    RequestHeader unset Cookie
    ProxyPass http://{upstream}/
</Location>
"""


@dataclass
class Figure:
    path: str
    label: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    redis_per_request: float
    errors: int
    bff_cpu_us: float = 0.0  # of cpu_us, the BFF's own (the paths it answers: its proxy, /bff/auth)


ECHO = """    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        location = /me {{ default_type text/plain; return 200 "$http_authorization"; }}
        location = /healthz {{ return 200 'ok'; }}
    }}"""


def echo_upstream(procs: list[Proc]) -> str:
    """A static nginx answering GET /me with the Authorization header it got: an upstream as fast as can be."""
    workdir = Path(tempfile.mkdtemp(prefix="jwt-bff-bench-echo-"))
    port = free_port()
    (workdir / "echo.conf").write_text(main_conf(workdir, ECHO.format(port=port), name="echo", workers="auto"))
    args = [NGINX, "-p", str(workdir), "-e", str(workdir / "echo-error.log"), "-c", str(workdir / "echo.conf")]
    procs.append(Proc([*args, "-g", "daemon off;"], health=f"http://127.0.0.1:{port}/healthz"))
    return f"127.0.0.1:{port}"


def reached_as(response: httpx.Response, upstream: str) -> str | None:
    """Whom the upstream's answer says the request came as: the resource server's ``sub``, or the subject of the
    bearer token the echo upstream got."""
    if upstream == "rs":
        return response.json().get("sub")
    scheme, _, token = response.text.partition(" ")
    return sub_of(token) if scheme == "Bearer" and token.count(".") == 2 else None


def sub_of(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


def clients(bff_url: str, apache_url: str, secret: str) -> str:
    common = {
        "client_secret": secret,
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid notes:read notes:write",
        "audience": ["notes"],
    }
    return json.dumps(
        [
            {"client_id": "bff", "redirect_uris": [f"{bff_url}/bff/callback"], **common},
            {"client_id": "apache", "redirect_uris": [f"{apache_url}/redirect_uri"], **common},
        ]
    )


def start_auth_server(procs: list[Proc], redis_url: str, bff_url: str, apache_url: str, secret: str) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "REDIS_URL": redis_url,
        "AUTH_ISSUER": url,
        "AUTH_KEYS_DIR": tempfile.mkdtemp(prefix="bench-keys-"),
        "AUTH_CLIENTS": clients(bff_url, apache_url, secret),
        "AUTH_ACCESS_TTL": "3600",
    }
    procs.append(Proc(service("auth_server", port), env, health=url + "/readyz"))
    r = httpx.post(url + "/users", json={"username": USER, "password": PASSWORD}, timeout=10)
    assert r.status_code in (201, 409), r.text
    return url


def browser_login(start: str, username: str, password: str) -> str:
    """Log in like a browser at a relying party that redirects to the auth server itself (mod_auth_openidc): start
    at a protected URL, follow the redirects, fill in the form. Returns the relying party's Cookie header."""
    with httpx.Client(follow_redirects=False, timeout=10, verify=False) as client:  # noqa: S501 - bench TLS front
        r = client.get(start)
        hops = 0
        while r.status_code in (302, 303) and hops < 10:
            location = urljoin(str(r.url), r.headers["location"])
            r = client.get(location)
            if r.status_code == 200 and "<form" in r.text:  # the auth server's login page
                parser = _FormParser()
                parser.feed(r.text)
                action = urljoin(str(r.url), parser.action or str(r.url))
                r = client.post(action, data={**parser.fields, "username": username, "password": password})
            hops += 1
        host = httpx.URL(start).host
        cookies = [(c.name, c.value) for c in client.cookies.jar if c.domain in (host, f"{host}.local")]
        if r.status_code != 200:
            raise RuntimeError(f"login through {start} ended at {r.status_code}: {r.text[:300]}")
        return "; ".join(f"{k}={v}" for k, v in cookies)


def start_caddy(procs: list[Proc], port: int, bff: str, upstream: str) -> None:
    binary = shutil.which("caddy")
    if binary is None:
        raise SystemExit("caddy is not installed (apt-get install caddy)")
    home = tempfile.mkdtemp(prefix="jwt-bff-bench-caddy-")
    env = {
        "EDGE_PORT": str(port),
        "BFF_ADDR": bff,
        "NOTES_ADDR": upstream,
        "LIVE_ADDR": upstream,
        "XDG_CONFIG_HOME": home,
        "XDG_DATA_HOME": home,
    }
    procs.append(Proc([binary, "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"], env))
    wait_http(f"http://127.0.0.1:{port}/healthz", procs[-1])


TLS_FRONT = """    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        location / {{
            proxy_pass http://{auth};
            proxy_set_header Host {auth};
        }}
    }}"""


def tls_front(procs: list[Proc], auth: str) -> str:
    """The auth server behind nginx with a throw-away self-signed certificate: an https URL of it."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    workdir = Path(tempfile.mkdtemp(prefix="jwt-bff-bench-tls-"))
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (workdir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    port = free_port()
    (workdir / "tls.conf").write_text(
        main_conf(workdir, TLS_FRONT.format(port=port, dir=workdir, auth=auth), name="tls")
    )
    args = [NGINX, "-p", str(workdir), "-e", str(workdir / "tls-error.log"), "-c", str(workdir / "tls.conf")]
    procs.append(Proc([*args, "-g", "daemon off;"]))
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(url + "/readyz", verify=False, timeout=1)  # noqa: S501 - our own throw-away certificate
            return url
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError("the TLS front did not start") from None
            time.sleep(0.1)


def start_apache(
    procs: list[Proc], port: int, issuer: str, tls: str, secret: str, redis_port: int, upstream: str
) -> None:
    if not os.access(APACHE, os.X_OK) or not (MODULES / "mod_auth_openidc.so").exists():
        raise SystemExit("apache2 and libapache2-mod-auth-openidc are needed (apt-get install both)")
    workdir = Path(tempfile.mkdtemp(prefix="jwt-bff-bench-apache-"))
    workdir.chmod(0o755)
    user = "User www-data\nGroup www-data" if os.geteuid() == 0 else ""
    conf = APACHE_CONF.format(
        dir=workdir,
        port=port,
        user=user,
        modules=MODULES,
        issuer=issuer,
        tls=tls,
        secret=secret,
        passphrase=secrets.token_urlsafe(24),
        redis_port=redis_port,
        upstream=upstream,
    )
    (workdir / "httpd.conf").write_text(conf)
    args = [APACHE, "-f", str(workdir / "httpd.conf"), "-DFOREGROUND"]
    check = subprocess.run([APACHE, "-t", "-f", str(workdir / "httpd.conf")], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"apache2 -t: {check.stderr}")
    procs.append(Proc(args))
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or procs[-1].proc.poll() is not None:
                raise RuntimeError(f"apache2 did not start: {(workdir / 'error.log').read_text()}") from None
            time.sleep(0.1)


def measure(args: argparse.Namespace) -> list[Figure]:
    seconds, connections = args.seconds, args.connections
    with processes() as procs:
        redis_url, redis_port = start_redis(procs)
        secret = secrets.token_urlsafe(24)
        bff_port, edge_port, caddy_port, apache_port = free_port(), free_port(), free_port(), free_port()
        bff_url, apache_url = f"http://127.0.0.1:{bff_port}", f"http://127.0.0.1:{apache_port}"
        auth_url = start_auth_server(procs, redis_url, bff_url, apache_url, secret)
        rs_url = start_rs(procs, redis_url, auth_url) if args.upstream == "rs" else f"http://{echo_upstream(procs)}"
        upstream = rs_url.removeprefix("http://")
        stack = Stack(redis_url, redis_port, auth_url, rs_url, [bff_url], secret)
        env = bff_env(stack, bff_url, BFF_TRUSTED_PROXIES="127.0.0.1/32")  # nginx and Caddy ask /bff/auth from here
        serve = ["serve", "--workers", str(args.bff_workers)]
        procs.append(Proc(service("bff", bff_port, *serve), env, health=bff_url + "/readyz"))
        bff_pid = procs[-1].proc.pid
        sock = Path(tempfile.mkdtemp(prefix="jwt-bff-bench-uds-")) / "bff.sock"
        uds_env = {**env, "BFF_TRUSTED_PROXIES": "unix"}
        procs.append(Proc([sys.executable, "-m", "bff", *serve, "--uds", str(sock)], uds_env))
        uds_pid = procs[-1].proc.pid
        tokens = code_flow_tokens(auth_url, secret, f"{bff_url}/bff/callback", USER, PASSWORD)
        user = sub_of(tokens["access_token"])

        edge = Edge(edge_port, f"127.0.0.1:{bff_port}", {"notes": upstream, "live": upstream}, workers="auto")
        uds_edge = Edge(free_port(), f"unix:{sock}", {"notes": upstream, "live": upstream}, workers="auto")
        conf = edge.dir / "edge.conf"
        anchor = "        location /api/notes/ {"
        alone = NGINX_ALONE.replace("fixed-token", tokens["access_token"])
        conf.write_text(conf.read_text().replace(anchor, alone + anchor, 1))
        start_caddy(procs, caddy_port, f"127.0.0.1:{bff_port}", upstream)
        caddy_pid = procs[-1].proc.pid
        tls = tls_front(procs, auth_url.removeprefix("http://"))
        start_apache(procs, apache_port, auth_url, tls, secret, redis_port, upstream)
        apache_pid = procs[-1].proc.pid
        try:
            edge.start()
            wait_http(edge.url + "/healthz")
            uds_edge.start()
            wait_http(uds_edge.url + "/healthz")
            assert edge.proc is not None and uds_edge.proc is not None
            cookie = login(bff_url, USER, PASSWORD)
            apache_cookie = browser_login(f"{apache_url}/api/notes/me", USER, PASSWORD)
            bff_headers = {"Cookie": cookie, "X-CSRF": "1"}
            paths: dict[str, tuple[str, dict[str, str], list[int]]] = {
                "nginx": (f"{edge.url}/api/alone/me", {}, [edge.proc.pid]),
                "bff": (f"{bff_url}/api/notes/me", bff_headers, [bff_pid]),
                "nginx_auth": (f"{edge.url}/api/notes/me", bff_headers, [edge.proc.pid, bff_pid]),
                "nginx_auth_uds": (f"{uds_edge.url}/api/notes/me", bff_headers, [uds_edge.proc.pid, uds_pid]),
                "caddy_auth": (f"http://127.0.0.1:{caddy_port}/api/notes/me", bff_headers, [caddy_pid, bff_pid]),
                "apache": (f"{apache_url}/api/notes/me", {"Cookie": apache_cookie}, [apache_pid]),
            }
            chosen = [p for p in paths if not args.only or p in args.only.split(",")]
            for name in chosen:  # each path reaches the upstream as the logged-in user, or nothing is timed
                url, headers, _ = paths[name]
                r = httpx.get(url, headers=headers, timeout=10)
                if r.status_code != 200 or reached_as(r, args.upstream) != user:
                    raise RuntimeError(f"{LABELS[name]}: {r.status_code} {r.text[:300]} (expected sub {user})")
                print(f"  checked: {LABELS[name]} reaches the upstream as {user}", flush=True)
            figures: dict[str, list[Figure]] = {name: [] for name in chosen}
            for round_ in range(args.rounds):
                order = chosen if round_ % 2 == 0 else list(reversed(chosen))
                for name in order:
                    url, headers, pids = paths[name]
                    wrk(url, headers, seconds=1, connections=connections)  # warm-up: pools, caches
                    before, cpu_before = redis_commandstats(redis_port), cpu_seconds(pids)
                    ours = [pid for pid in pids if pid in (bff_pid, uds_pid)]  # the BFF answering on this path
                    bff_before = cpu_seconds(ours)
                    result = wrk(url, headers, seconds=seconds, connections=connections)
                    cpu = (cpu_seconds(pids) - cpu_before) / max(result.requests, 1)
                    bff_cpu = (cpu_seconds(ours) - bff_before) / max(result.requests, 1) if ours else 0
                    after = redis_commandstats(redis_port)
                    commands = sum(after[k] - before.get(k, 0) for k in after if k != "info")
                    figure = Figure(
                        name,
                        LABELS[name],
                        result.rps,
                        result.p50_ms,
                        result.p99_ms,
                        cpu * 1e6,
                        commands / max(result.requests, 1),
                        result.errors,
                        bff_cpu * 1e6,
                    )
                    figures[name].append(figure)
                    print(f"  {fmt(figure)}", flush=True)
        finally:
            edge.cleanup()
            uds_edge.cleanup()
    return [best(rounds) for rounds in figures.values()]


def best(rounds: list[Figure]) -> Figure:
    """The round with the least CPU per request: the one the machine's other work disturbed least."""
    return min(rounds, key=lambda f: f.cpu_us)


def fmt(f: Figure) -> str:
    errors = f"  ({f.errors} errors)" if f.errors else ""
    return (
        f"{f.label:<40} {f.rps:>8,.0f} req/s  p50 {f.p50_ms:6.2f} ms  p99 {f.p99_ms:7.2f} ms  "
        f"CPU {f.cpu_us:6.1f} us/req (BFF {f.bff_cpu_us:5.1f})  Redis {f.redis_per_request:.3f}/req{errors}"
    )


def table(figures: list[Figure]) -> str:
    by = {f.path: f for f in figures}
    floor = by.get("nginx")
    lines = [
        "| path | req/s | p50 ms | p99 ms | CPU µs/request | of which the BFF | over nginx alone "
        "| Redis commands/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        over = f"+{f.cpu_us - floor.cpu_us:.0f}" if floor is not None and f is not floor else ""
        lines.append(
            f"| {f.label} | {f.rps:,.0f} | {f.p50_ms:.2f} | {f.p99_ms:.2f} | {f.cpu_us:.0f} "
            f"| {f'{f.bff_cpu_us:.0f}' if f.bff_cpu_us else ''} | {over} "
            f"| {f.redis_per_request:.3f} |"
        )
    ratios = []
    if "apache" in by:
        apache = by["apache"]
        for name, label in (
            ("bff", "BFF proxy"),
            ("nginx_auth", "nginx + /bff/auth"),
            ("nginx_auth_uds", "nginx + /bff/auth, Unix socket"),
        ):
            if name in by:
                ours = by[name]
                ratios.append(
                    f"- {label} / Apache + mod_auth_openidc: {ours.rps / apache.rps:.2f}x req/s, "
                    f"{apache.cpu_us / ours.cpu_us:.2f}x less CPU per request"
                )
        if floor is not None and "nginx_auth" in by:
            ours, theirs = by["nginx_auth"].cpu_us - floor.cpu_us, apache.cpu_us - floor.cpu_us
            ratios.append(f"- auth's own CPU over nginx alone: ours +{ours:.0f} µs, mod_auth_openidc +{theirs:.0f} µs")
            if "nginx_auth_uds" in by:
                ratios.append(f"- the same over a Unix socket: +{by['nginx_auth_uds'].cpu_us - floor.cpu_us:.0f} µs")
    return "\n".join(lines + [""] + ratios)


def chart(figures: list[Figure], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f.label.replace(" + ", "\n+ ").replace(", fixed", "\nfixed") for f in figures]
    fig, (cpu_ax, rps_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = ["#9e9e9e" if f.path == "nginx" else "#1f77b4" if "bff" in f.path or "auth" in f.path else "#d62728"
              for f in figures]  # fmt: skip
    cpu_ax.barh(labels, [f.cpu_us for f in figures], color=colors)
    cpu_ax.set_xlabel("CPU µs per request in front of the upstream (less is better)")
    rps_ax.barh(labels, [f.rps for f in figures], color=colors)
    rps_ax.set_xlabel("requests per second, wrk -t1 -c32 (more is better)")
    rps_ax.set_yticklabels([])
    for ax, values in ((cpu_ax, [f.cpu_us for f in figures]), (rps_ax, [f.rps for f in figures])):
        ax.invert_yaxis()
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=9)
    fig.suptitle("Session cookie to bearer token, one run on one machine (bench/peers.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None, run: Callable[[argparse.Namespace], list[Figure]] = measure) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="rounds over all paths (alternating order); the least "
                        "disturbed round of each path is reported")  # fmt: skip
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(LABELS))
    parser.add_argument("--chart", type=Path, help="draw the figures into this PNG (matplotlib: the bench extra)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--bff-workers", type=int, default=1, help="worker processes of the BFF (bff serve "
                        "--workers; its CPU figure counts them all): Apache and nginx use every core")  # fmt: skip
    parser.add_argument("--upstream", choices=("rs", "echo"), default="rs", help="every path's upstream: the sample "
                        "resource server, or a static nginx echoing the token (module docstring)")  # fmt: skip
    args = parser.parse_args(argv)
    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s per path, {args.rounds} round(s), upstream {args.upstream}",
          flush=True)  # fmt: skip
    figures = run(args)
    print()
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=1))
    if args.chart:
        chart(figures, args.chart)
        print(f"\nchart: {args.chart}")


if __name__ == "__main__":
    main()
