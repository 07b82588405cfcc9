"""The notes API on a real 3-master Redis Cluster (REDIS_URL lists the nodes)."""

from __future__ import annotations

import httpx
import pytest

from resource_server.app import create_app
from resource_server.settings import Settings
from resource_server.verifier.testing import FakeIssuer

from .helpers import bearer

pytestmark = pytest.mark.anyio


async def test_notes_on_a_redis_cluster(redis_cluster_url: str) -> None:
    issuer = FakeIssuer("http://localhost:9000", "notes")
    app = create_app(Settings.from_env({"REDIS_URL": redis_cluster_url}), verifier=issuer.verifier())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rs.test") as client:
            assert (await client.get("/readyz")).json()["redis"] is True
            for sub in ("alice", "bob", "carol", "dave"):  # users land on different masters
                headers = bearer(issuer.token("notes:read notes:write", sub=sub, client_id="bff"))
                created = await client.post("/notes", headers=headers, json={"text": f"note of {sub}"})
                assert created.status_code == 201, created.text
                listed = (await client.get("/notes", headers=headers)).json()["notes"]
                assert [n["text"] for n in listed] == [f"note of {sub}"]
                assert (await client.delete(f"/notes/{created.json()['id']}", headers=headers)).status_code == 204
