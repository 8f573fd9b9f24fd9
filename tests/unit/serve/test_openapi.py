"""The OpenAPI document: valid OpenAPI 3.0, covering every endpoint and parameter; and the API
answering schemathesis's generated requests (valid and invalid) as the document says, never 500."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jsonschema_rs
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_30
from starlette.routing import Route
from tests.unit.serve.world import T0, World, second_0, second_1

from flowscope.serve.app import ENDPOINTS


def test_the_document_is_valid_openapi_3_0(world: World) -> None:
    document = world.client.get("/api/v1/openapi.json").json()
    errors = [str(error) for error in jsonschema_rs.Draft4Validator(OPENAPI_30).iter_errors(document)]
    assert errors == []
    assert document["openapi"] == "3.0.3" and "security" not in document


def test_every_route_and_parameter_is_documented(world: World) -> None:
    document = world.client.get("/api/v1/openapi.json").json()
    routes = {(method.lower(), route.path) for route in world.app.routes if isinstance(route, Route)
              for method in (route.methods or ()) if method != "HEAD"}
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert routes - documented == {("get", "/"), *((m, "/api/{rest:path}") for m in
                                                    ("get", "post", "delete", "put", "patch", "options"))}
    assert documented <= routes
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        assert [p["name"] for p in operation["parameters"]] == [p.name for p in endpoint.params]
    results = document["paths"]["/api/v1/results"]["get"]
    interval = next(p for p in results["parameters"] if p["name"] == "interval")
    assert interval["schema"] == {"type": "string", "enum": ["1s", "1m", "1h"], "default": "1m"}
    view = next(p for p in results["parameters"] if p["name"] == "view")
    assert view["schema"]["enum"] == ["all", "ssh"]
    assert set(results["responses"]) == {"200", "400"}
    assert set(results["responses"]["200"]["content"]) == {"application/json", "text/csv"}


# ------------------------------------------------------------------------- schemathesis
# (schemathesis.pytest.from_fixture does not work with pytest 9: the app is built at import instead)


def _api_world() -> World:
    built = World(Path(tempfile.mkdtemp(prefix="flowscope-schemathesis-")))
    built.feed(second_0())
    built.at(T0 + 1_100)
    built.feed(second_1())
    built.at(T0 + 61_000)  # the seconds and the minute are closed: results everywhere
    atexit.register(shutil.rmtree, built.store.config.path.rsplit("/", 1)[0], True)
    return built


API_WORLD = _api_world()
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", API_WORLD.app).exclude(
    path="/api/v1/stream")  # endless by design: tested in test_stream
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)
