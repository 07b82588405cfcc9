"""deploy/k8s/: every manifest passes the Kubernetes schema (kubernetes-validate, strict) and wires what ops need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_passes_the_kubernetes_schema(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_a_schema_violation_is_caught() -> None:
    (deployment,) = [d for d in documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "bff"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_each_service_has_a_deployment_with_probes_and_a_service() -> None:
    docs = documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert set(deployments) == {"auth-server", "resource-server", "bff"}
    assert services == {"redis", "auth-server", "resource-server", "bff"}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_secrets_come_from_mounted_secret_objects_never_literals() -> None:
    """Every secret setting of the services is given as <NAME>_FILE, a key of a Secret mounted read-only (or, at
    least, by secretKeyRef), never as a literal value."""
    from auth_server.settings import SETTINGS as AUTH
    from bff.settings import SETTINGS as BFF
    from resource_server.settings import SETTINGS as RS

    secret_names = {s.name for table in (BFF, AUTH, RS) for s in table.settings if s.secret}
    docs = documents()
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    given = set()
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        for var in container["env"]:
            if var["name"] in secret_names:
                ref = var["valueFrom"]["secretKeyRef"]  # a literal "value" would be a KeyError here
                assert ref["name"] in secrets and ref["key"] in secrets[ref["name"]]["stringData"]
                given.add(var["name"])
            if var["name"].removesuffix("_FILE") in secret_names and var["name"].endswith("_FILE"):
                directory, _, file_name = var["value"].rpartition("/")
                mount = mounts[directory]
                assert mount["readOnly"] is True
                secret = volumes[mount["name"]]["secret"]
                (item,) = [i for i in secret["items"] if i["path"] == file_name]
                assert item["key"] in secrets[secret["secretName"]]["stringData"], var
                given.add(var["name"].removesuffix("_FILE"))
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
    assert {"BFF_CLIENT_SECRET", "AUTH_CLIENTS"} <= given


def test_ingress_nginx_asks_the_bff_and_never_exposes_bff_auth() -> None:
    docs = documents()
    ingresses = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Ingress"}
    bff_paths = [p for rule in ingresses["bff"]["spec"]["rules"] for p in rule["http"]["paths"]]
    # The BFF's own Ingress: its pages one by one, nothing that would route /bff/auth from outside.
    assert all(p["backend"]["service"]["name"] == "bff" for p in bff_paths)
    for p in bff_paths:
        assert p["pathType"] == "Exact" or not "/bff/auth".startswith(p["path"]), p
    assert {p["path"] for p in bff_paths} >= {"/", "/bff/login", "/bff/callback", "/bff/user", "/bff/logout"}

    api = ingresses["api-notes"]
    notes = api["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "bff")
    port = service["spec"]["ports"][0]["port"]
    assert notes[prefix + "auth-url"].startswith("http://bff.") and notes[prefix + "auth-url"].endswith(
        f":{port}/bff/auth"
    )
    identity = {"X-Auth-Request-Sub", "X-Auth-Request-User", "X-Auth-Request-Email", "X-Auth-Request-Groups"}
    assert {"Authorization", *identity} <= set(notes[prefix + "auth-response-headers"].split(","))
    assert notes[prefix + "auth-method"] == "GET"  # makes the controller send X-Original-URI
    assert "proxy_set_header X-Original-Method $request_method;" in notes[prefix + "auth-snippet"]
    assert 'proxy_set_header Cookie "";' in notes[prefix + "configuration-snippet"]
    (path,) = [p for rule in api["spec"]["rules"] for p in rule["http"]["paths"]]
    assert path["path"].startswith("/api/notes") and path["backend"]["service"]["name"] == "resource-server"

    (bff,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "bff"]
    (container,) = bff["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["BFF_TRUSTED_PROXIES"] and env["BFF_TRUSTED_PROXIES"] not in ("0.0.0.0/0", "::/0")


def test_every_variable_a_deployment_sets_is_a_setting_of_its_service() -> None:
    """No typo the service would ignore: each container's variables are settings its command declares."""
    from auth_server.settings import SETTINGS as AUTH
    from bff.settings import SETTINGS as BFF
    from resource_server.settings import SETTINGS as RS

    tables = {"bff": BFF, "auth-server": AUTH, "resource-server": RS}
    for deployment in (d for d in documents() if d["kind"] == "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        table = tables[container["args"][0]]
        known = set(table.by_name) | {s.file_name for s in table.settings if s.secret}
        variables = {v["name"] for v in container["env"]}
        assert variables <= known, f"{deployment['metadata']['name']}: {sorted(variables - known)} are no settings"
