"""The access token: required everywhere when configured, by header, query (sets a cookie) or cookie."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest
from starlette.testclient import TestClient
from tests.unit.serve.world import World

TOKEN = "s3cret;=/+ x"  # characters a cookie cannot carry raw


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path, token=TOKEN)
    yield built
    built.close()


def fresh(world: World) -> TestClient:
    return TestClient(world.app, follow_redirects=False)


@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/results", "/api/v1/openapi.json", "/metrics",
                                  "/api/v1/stream", "/", "/app.js", "/api/v1/nothing"])
def test_everything_needs_the_token(guarded: World, path: str) -> None:
    response = fresh(guarded).get(path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="flowscope"'
    assert response.json()["error"] == "unauthorized"
    assert fresh(guarded).get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert fresh(guarded).get(path, params={"token": "wrong"}).status_code == 401


def test_bearer_header(guarded: World) -> None:
    client = fresh(guarded)
    response = client.get("/api/v1/health", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200 and "set-cookie" not in response.headers
    assert client.post("/api/v1/hosts/watched", json={"address": "192.0.2.7"},
                       headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 201
    assert client.post("/api/v1/hosts/watched", json={"address": "192.0.2.8"}).status_code == 401


def test_query_token_on_the_api_sets_the_cookie(guarded: World) -> None:
    client = fresh(guarded)
    response = client.get("/api/v1/config", params={"token": TOKEN})
    assert response.status_code == 200 and response.json()["auth"] is True
    assert response.headers["set-cookie"] == \
        "flowscope_token=s3cret%3B%3D%2F%2B%20x; Path=/; HttpOnly; SameSite=Strict"
    assert client.get("/api/v1/config").status_code == 200  # the cookie does it from now on
    assert client.get("/metrics").status_code == 200


def test_a_page_opened_with_the_token_is_redirected_without_it(guarded: World) -> None:
    client = fresh(guarded)
    response = client.get("/", params={"token": TOKEN, "view": "ssh"})
    assert response.status_code == 303
    assert response.headers["location"] == "/?view=ssh"  # the token leaves the address bar
    assert "flowscope_token=" in response.headers["set-cookie"]
    assert client.get(response.headers["location"]).status_code == 200



def test_the_redirect_never_leaves_this_server(guarded: World) -> None:
    # "//host/path" as a request target would make "Location: //host/path", a redirect elsewhere
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    query = urlencode({"token": TOKEN}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "//evil.example/x", "raw_path": b"//evil.example/x", "query_string": query, "headers": [],
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000), "root_path": ""}
    anyio.run(guarded.app, scope, receive, send)
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 303 and headers[b"location"] == b"/evil.example/x"


def test_stream_with_the_cookie(guarded: World) -> None:
    client = fresh(guarded)
    client.cookies.set("flowscope_token", "s3cret%3B%3D%2F%2B%20x")
    with client.stream("GET", "/api/v1/stream") as response:
        assert response.status_code == 200
        assert next(response.iter_lines()) == "retry: 2000"


def test_openapi_declares_the_security_schemes(guarded: World) -> None:
    document = fresh(guarded).get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert document["security"] == [{"bearer": []}, {"query": []}, {"cookie": []}]
    assert document["paths"]["/api/v1/health"]["get"]["responses"]["401"]["description"] == \
        "the access token is missing or wrong"
