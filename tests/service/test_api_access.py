"""REQ-PRIV-007 around the JSON API: the OpenAPI document's security description, and the token file's lifecycle.

The protected operations are derived from the app's ``url_map`` and the check's own allow-list
(``appliance.service.api.OPEN_ENDPOINTS``), never listed here. The app is the one ``appliance serve`` builds
(``create_web_app``: the kiosk UI with the API blueprint) over a real service with the service tests' configuration.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from werkzeug.security import generate_password_hash

from appliance.commands.serve import create_web_app
from appliance.service import api
from appliance.service.api_token import API_TOKEN_FILE, issue_api_token, read_api_token, revoke_api_token
from appliance.service.lesions_api import lesions_api
from appliance.service.revisions_api import review_api
from appliance.service.runtime import ApplianceService

NURSE_PIN = "1111"
#: The two alternatives the API accepts, by the names ``openapi.json`` gives them.
BEARER, COOKIE = "apiToken", "kioskSession"

#: The parts of the OpenAPI 3.1 schema (spec.openapis.org/oas/3.1/schema/2022-10-07) covering what the security
#: description adds: Security Scheme Object (apiKey / http / bearer), Security Requirement Object, the document's
#: and each operation's ``security`` and ``components.securitySchemes``. Transcribed, nothing fetched at run time.
OAS31_SECURITY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "security-requirement": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
        "security": {"type": "array", "items": {"$ref": "#/$defs/security-requirement"}},
        "security-scheme": {
            "type": "object",
            "properties": {
                "type": {"enum": ["apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"]},
                "description": {"type": "string"},
            },
            "required": ["type"],
            "allOf": [
                {"$ref": "#/$defs/type-apikey"},
                {"$ref": "#/$defs/type-http"},
                {"$ref": "#/$defs/type-http-bearer"},
            ],
            "patternProperties": {"^x-": True},
            "unevaluatedProperties": False,
        },
        "type-apikey": {
            "if": {"properties": {"type": {"const": "apiKey"}}, "required": ["type"]},
            "then": {
                "properties": {"name": {"type": "string"}, "in": {"enum": ["query", "header", "cookie"]}},
                "required": ["name", "in"],
            },
        },
        "type-http": {
            "if": {"properties": {"type": {"const": "http"}}, "required": ["type"]},
            "then": {"properties": {"scheme": {"type": "string"}}, "required": ["scheme"]},
        },
        "type-http-bearer": {
            "if": {
                "properties": {
                    "type": {"const": "http"},
                    "scheme": {"type": "string", "pattern": "^[Bb][Ee][Aa][Rr][Ee][Rr]$"},
                },
                "required": ["type", "scheme"],
            },
            "then": {"properties": {"bearerFormat": {"type": "string"}}},
        },
        "operation": {"type": "object", "properties": {"security": {"$ref": "#/$defs/security"}}},
    },
    "type": "object",
    "required": ["openapi", "info", "paths", "components"],
    "properties": {
        "openapi": {"type": "string", "pattern": r"^3\.1\.\d+(-.+)?$"},
        "security": {"$ref": "#/$defs/security"},
        "components": {
            "type": "object",
            "properties": {
                "securitySchemes": {
                    "type": "object",
                    "additionalProperties": {"$ref": "#/$defs/security-scheme"},
                },
            },
        },
        "paths": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    m: {"$ref": "#/$defs/operation"}
                    for m in ("get", "put", "post", "delete", "options", "head", "patch", "trace")
                },
            },
        },
    },
}


@pytest.fixture
def kiosk(service_factory: Callable[..., ApplianceService]) -> tuple[Any, ApplianceService]:
    """The app ``appliance serve`` builds (UI + API, bearer token issued) over a started service."""
    svc = service_factory(ui={"pins": {"nurse": generate_password_hash(NURSE_PIN, "pbkdf2:sha256:1000")}})
    svc.start(receiver=False, importer=False)
    return create_web_app(svc.config, svc, api_token=issue_api_token(svc.data_dir)), svc


def _template(path: str) -> str:
    """A route with its parameters blanked, so Flask's ``<int:job_id>`` and OpenAPI's ``{id}`` compare equal."""
    return re.sub(r"\{[^}]*\}", "{}", re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "{}", path))


def _api_routes(app: Any) -> dict[tuple[str, str], tuple[str, Any]]:
    """(blanked path, lower-case method) → (endpoint, rule) for every route ``openapi.json`` documents: the API
    blueprint's and the model review blueprint's."""
    routes: dict[tuple[str, str], tuple[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.partition(".")[0] not in (api.api_blueprint.name, review_api.name, lesions_api.name):
            continue
        for method in sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"}):
            routes[(_template(rule.rule), method.lower())] = (rule.endpoint, rule)
    return routes


def _sample_url(rule: Any) -> str:
    """A concrete URL of a route (job 1, path/UID ``x``): the check runs before any view looks at them."""
    return re.sub(r"<(?:([^:<>]+):)?[^<>]+>", lambda m: "1" if m.group(1) == "int" else "x", rule.rule)


def _requirement_names(requirements: list[dict[str, list[str]]]) -> list[set[str]]:
    return [set(r) for r in requirements]


@pytest.mark.req("REQ-PRIV-007")
def test_openapi_declares_the_auth_schemes_on_every_protected_path(kiosk: tuple[Any, ApplianceService]) -> None:
    app, _svc = kiosk
    assert app.before_request_funcs[api.api_blueprint.name] == [api.authorise_request]  # the one check
    client = app.test_client()
    spec = client.get("/api/openapi.json").get_json()  # open: no token, no session
    jsonschema.Draft202012Validator.check_schema(OAS31_SECURITY_SCHEMA)
    jsonschema.Draft202012Validator(OAS31_SECURITY_SCHEMA).validate(spec)

    schemes = spec["components"]["securitySchemes"]
    assert schemes[BEARER]["type"] == "http" and schemes[BEARER]["scheme"].lower() == "bearer"
    assert API_TOKEN_FILE.as_posix() in schemes[BEARER]["description"]
    assert schemes[COOKIE]["type"] == "apiKey" and schemes[COOKIE]["in"] == "cookie"
    assert schemes[COOKIE]["name"] == app.config["SESSION_COOKIE_NAME"]
    # Either alternative alone is enough: two requirement objects of one scheme each, not one of both.
    assert _requirement_names(spec["security"]) == [{BEARER}, {COOKIE}]

    routes = _api_routes(app)
    operations = {(_template(path), method): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert set(operations) == set(routes), "openapi.json and the blueprint's routes differ"
    protected = [key for key, (endpoint, _rule) in routes.items() if endpoint not in api.OPEN_ENDPOINTS]
    assert protected and len(protected) < len(routes)  # both kinds exist, so both branches below are exercised
    for key, (endpoint, rule) in routes.items():
        op = operations[key]
        declared = [name for req in op.get("security", spec["security"]) for name in req]
        assert set(declared) <= set(schemes), key  # every named scheme is declared
        status = client.open(_sample_url(rule), method=key[1].upper(), json={}).status_code
        if endpoint in api.OPEN_ENDPOINTS:
            assert op["security"] == [], key
            assert status != 401, key
        else:
            effective = _requirement_names(op.get("security", spec["security"]))
            assert effective == [{BEARER}, {COOKIE}], key
            assert op["responses"]["401"] == {"$ref": "#/components/responses/Unauthenticated"}, key
            assert "403" in op["responses"], key
            assert status == 401, key  # what the document says is what the check does


@pytest.mark.req("REQ-PRIV-007")
def test_the_declared_schemes_are_the_ones_that_authenticate(kiosk: tuple[Any, ApplianceService]) -> None:
    """The cookie named in openapi.json is the one the kiosk login sets, and it (or the bearer) opens the API."""
    app, svc = kiosk
    schemes = app.test_client().get("/api/openapi.json").get_json()["components"]["securitySchemes"]
    nurse = app.test_client()
    r = nurse.post("/auth/login", json={"role": "nurse", "pin": NURSE_PIN})
    assert r.status_code == 200
    set_names = {c.partition("=")[0] for c in r.headers.getlist("Set-Cookie")}
    assert schemes[COOKIE]["name"] in set_names
    session_cookie = nurse.get_cookie(schemes[COOKIE]["name"])
    assert session_cookie is not None
    replay = app.test_client()  # a client holding only the declared cookie
    assert replay.get("/api/studies").status_code == 401
    replay.set_cookie(schemes[COOKIE]["name"], session_cookie.value)
    assert replay.get("/api/studies").status_code == 200
    bearer = {"Authorization": f"Bearer {read_api_token(svc.data_dir)}"}
    assert app.test_client().get("/api/studies", headers=bearer).status_code == 200


@pytest.mark.req("REQ-PRIV-007")
def test_orderly_stop_removes_the_api_token_file(service_factory: Callable[..., ApplianceService]) -> None:
    svc = service_factory()
    svc.start(receiver=False, importer=False)
    token_file = svc.data_dir / API_TOKEN_FILE
    create_web_app(svc.config, svc, api_token=issue_api_token(svc.data_dir))  # as `appliance serve` starts
    assert token_file.is_file()
    svc.stop()
    assert not token_file.exists()
    assert not list(token_file.parent.iterdir())  # no temporary file left beside it either
    assert [r.action for r in svc.audit.records()][-1] == "service.stopped"
    assert revoke_api_token(svc.data_dir) is False  # a second stop finds nothing to remove and does not fail


@pytest.mark.req("REQ-PRIV-007")
def test_api_token_file_is_owner_only_even_under_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        token = issue_api_token(tmp_path)
    finally:
        os.umask(previous)
    token_file = tmp_path / API_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text(encoding="utf-8") == token + "\n" and len(token) >= 32


@pytest.mark.req("REQ-PRIV-007")
def test_a_stale_token_from_a_crashed_run_is_replaced_at_start(
    service_factory: Callable[..., ApplianceService],
) -> None:
    """A kill -9 leaves run/api_token behind (world-readable here): the next start replaces and refuses it."""
    svc = service_factory()
    token_file = svc.data_dir / API_TOKEN_FILE
    token_file.parent.mkdir(parents=True)
    stale = "stale-token-of-a-crashed-run-0123456789abcdef"
    token_file.write_text(stale + "\n", encoding="utf-8")
    token_file.chmod(0o644)
    svc.start(receiver=False, importer=False)  # the order of `appliance serve`: service, then token, then app
    try:
        app = create_web_app(svc.config, svc, api_token=issue_api_token(svc.data_dir))
        fresh = read_api_token(svc.data_dir)
        assert fresh != stale and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        client = app.test_client()
        assert client.get("/api/studies", headers={"Authorization": f"Bearer {stale}"}).status_code == 401
        assert client.get("/api/studies", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
    finally:
        svc.stop()
    assert not token_file.exists()
