"""The OpenAPI 3.1 description of the REST API, served at ``/api/v1/openapi.json``.

Request bodies are the pydantic models the handlers validate with (so the description cannot
drift from what is enforced); a test checks that every route of the app is described here.
"""

from __future__ import annotations

from typing import Any

from . import api, kitlist
from .auth import DEPARTEMENT

JSON = "application/json"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(summary: str, body: str | None = None, ok: int = 200, auth: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(ok): {"description": "success", "content": {JSON: {"schema": {"type": "object"}}}},
            "400": {"description": "invalid body or query", "content": {JSON: _error()}},
            "401": {"description": "not signed in", "content": {JSON: _error()}},
            "403": {"description": "out of scope or wrong CSRF token", "content": {JSON: _error()}},
            "404": {"description": "not found", "content": {JSON: _error()}},
        },
    }
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
        op["responses"]["413"] = {"description": "body over 64 KiB", "content": {JSON: _error()}}
        op["responses"]["415"] = {"description": "not JSON", "content": {JSON: _error()}}
    if not auth:
        op["security"] = []
    return op


def _error() -> dict[str, Any]:
    return {"schema": _ref("Error")}


def _kit_param() -> list[dict[str, Any]]:
    return [{"name": "kit_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _list_params() -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "schema": schema, "description": description}

    return [
        query("limit", {"type": "integer", "minimum": 1, "maximum": api.MAX_PAGE}, "default 100"),
        query("offset", {"type": "integer", "minimum": 0, "maximum": api.MAX_OFFSET}, ""),
        query("sort", {"enum": list(kitlist.KIT_SORTS)}, "default departement; ties by kit id"),
        query("order", {"enum": ["asc", "desc"]}, "default asc"),
        query("departement", {"type": "string", "pattern": DEPARTEMENT.pattern}, ""),
        query("school", {"type": "string", "pattern": api.SCHOOL_ID.pattern}, "a school id"),
        query("state", {"enum": list(kitlist.KIT_STATES)}, "docs/provisioning.md, Admin list"),
        query(
            "q",
            {"type": "string", "maxLength": api.MAX_SEARCH},
            "text in the kit's name or id, or its school's name or id (any case)",
        ),
    ]


def _config_params() -> list[dict[str, Any]]:
    return [
        {
            "name": "level",
            "in": "path",
            "required": True,
            "schema": {"enum": ["fleet", "school", "kit"]},
        },
        {
            "name": "scope_id",
            "in": "path",
            "required": True,
            "description": "`default` for fleet, a school id, or a kit id",
            "schema": {"type": "string"},
        },
    ]


def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        }
    }
    for name, model in api.BODY_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub_name, sub in schema.pop("$defs", {}).items():
            schemas[sub_name] = sub
        schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hybrid classroom provisioning server", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": api.COOKIE},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
        },
        "security": [{"session": [], "csrf": []}],
        "paths": _paths(),
    }


def _paths() -> dict[str, Any]:
    login = _op("Sign in: sets the session cookie, returns the CSRF token", "Login", auth=False)
    login["responses"]["429"] = {
        "description": "too many failed attempts",
        "content": {JSON: _error()},
    }
    enroll = _op("A kit exchanges an enrollment code for its id and secret", "Enroll", 201, False)
    enroll["responses"]["429"] = login["responses"]["429"]
    return {
        "/api/v1/login": {"post": login},
        "/api/v1/logout": {"post": _op("Sign out")},
        "/api/v1/me": {"get": _op("The signed-in admin and the CSRF token")},
        "/api/v1/me/password": {
            "post": _op(
                "Change one's own password (the current one is asked again; every other "
                "session of this admin ends)",
                "Password",
            )
        },
        "/api/v1/kits": {
            "get": {
                **_op(
                    "One page of the kits in the admin's scope, filtered and sorted by the "
                    "database: {kits, total, limit, offset, server_time}; each kit's online "
                    "state, session, problems, network (reach, pupils by path), configuration"
                ),
                "parameters": _list_params(),
            }
        },
        "/api/v1/kits/counts": {
            "get": _op(
                "Kits, online, live, problem and revoked per département and per school in "
                "scope (schools without a kit too), each school's network class: "
                "{total, departements, schools, server_time}"
            )
        },
        "/api/v1/kits/{kit_id}": {
            "parameters": _kit_param(),
            "get": _op("One kit: latest health, history (?history=N), configuration"),
            "patch": _op("Rename or move a kit", "KitPatch"),
        },
        "/api/v1/kits/{kit_id}/revoke": {
            "parameters": _kit_param(),
            "post": _op("Revoke: closes its link at once and refuses its credential"),
        },
        "/api/v1/turn": {
            "get": _op(
                "The TURN settings: URLs, derived STUN URLs, credential lifetimes, whether a "
                "secret is set (never the secret)"
            )
        },
        "/api/v1/schools": {
            "get": _op("Schools in scope"),
            "post": _op("Add a school", "School", 201),
        },
        "/api/v1/enrollment-codes": {
            "post": _op("Create an enrollment code (shown once)", "EnrollmentCode", 201)
        },
        "/api/v1/enroll": {"post": enroll},
        "/api/v1/config/{level}/{scope_id}": {
            "parameters": _config_params(),
            "get": _op("One configuration layer"),
            "put": _op("Replace a configuration layer and push it", "Config"),
        },
        "/api/v1/users": {
            "get": _op("Admins (national admins only)"),
            "post": _op("Add an admin (national admins only)", "User", 201),
        },
        "/api/v1/users/{user_id}": {
            "parameters": [
                {"name": "user_id", "in": "path", "required": True, "schema": {"type": "integer"}}
            ],
            "delete": _op("Remove an admin and end its sessions (national admins only)"),
        },
        "/api/v1/audit": {"get": _op("The audit log (newest first; ?limit=N)")},
        "/api/v1/events": {"get": _op("Server-sent events: kit changes in scope")},
        "/api/v1/openapi.json": {"get": _op("This document", auth=False)},
    }
