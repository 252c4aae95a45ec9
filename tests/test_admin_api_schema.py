"""The admin API's OpenAPI document (schemas/admin-api.openapi.yaml), on its own and against the running API.

- On its own (no stack needed): a valid OpenAPI 3.1 document with every operation of the contract (the
  identity notes, "Admin API"), the admin error shape on every refusal, and input schemas that hold the HR
  file's rules.
- Against the local stack: schemathesis generates requests from the document (positive data only, a fixed
  seed, a bounded number of examples per operation) and sends them with an administrator's token; every
  answer must have a documented status, media type, headers and body. Operations that change a user never
  reach a user this test did not create: half the generated ids are mapped to a user the test makes for
  the purpose (so those operations answer with a user), and any other id that names an existing user is
  swapped for one that does not exist (a 404, which the document declares); the users the test and its
  generated creates made are removed at the end. API keys likewise: half the generated key ids are mapped
  to a key this test issues (a fresh one for each revoke and rotate, so those answer 200/201 and not only
  409), the others name no key (404); the keys the test and its generated issues made are revoked at the
  end.
"""

from __future__ import annotations

import json
import uuid
import zlib

import pytest
import schemathesis
from openapi_spec_validator import validate as validate_openapi
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from helpers import (
    ADMIN_GROUP,
    HTTP_TIMEOUT,
    REPO_ROOT,
    admin_call,
    admin_document,
    admin_schema_errors,
    admin_url,
    aws_client,
    confirm_cognito_user,
    delete_cognito_user,
    unique_digits,
)

# Generated examples per operation; 18 operations stay well under a minute against the local stack.
MAX_EXAMPLES = 25
SEED = 20261125
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

CONTRACT_OPERATIONS = {
    ("get", "/system/health"),
    ("get", "/users"),
    ("post", "/users"),
    ("get", "/users/{id}"),
    ("patch", "/users/{id}"),
    ("delete", "/users/{id}"),
    ("put", "/users/{id}/disable"),
    ("put", "/users/{id}/enable"),
    ("post", "/users/{id}/password-reset"),
    ("post", "/users/{id}/sign-out"),
    ("post", "/users/csv/upload"),
    ("get", "/users/csv/download"),
    ("get", "/users/sync/status"),
    ("get", "/apikeys"),
    ("post", "/apikeys"),
    ("get", "/apikeys/{id}"),
    ("post", "/apikeys/{id}/revoke"),
    ("post", "/apikeys/{id}/rotate"),
}
# The scope pair (write, read) of each resource, by the path's first segment (policy/scopes.json;
# gateway_shared::scopes::admin_resource_scopes).
RESOURCE_SCOPES = {
    "system": ("admin:users", "admin:users:read"),
    "users": ("admin:users", "admin:users:read"),
    "apikeys": ("admin:apikeys", "admin:apikeys:read"),
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method, path, operation


# --------------------------------------------------------------------------
# The document on its own
# --------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1():
    document = admin_document()
    assert document["openapi"] == "3.1.0"
    validate_openapi(document)
    assert document["servers"] == [{"url": "/admin"}]
    assert document["security"] == [{"bearerAuth": []}]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        **document["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer",
        "bearerFormat": "JWT"}


def test_the_document_has_exactly_the_contracts_operations():
    assert {(m, p) for m, p, _ in operations(admin_document())} == CONTRACT_OPERATIONS


def policy() -> dict:
    return json.loads((REPO_ROOT / "policy" / "scopes.json").read_text(encoding="utf-8"))


def policy_scopes() -> set[str]:
    """Every scope the scope policy defines: the named ones and what they include."""
    scopes = policy()["scopes"]
    return set(scopes) | {child for children in scopes.values() for child in children}


def test_the_required_scopes_are_the_policys_and_its_admin_groups_hold_them():
    groups = policy()["groups"]
    writes = {write for write, _ in RESOURCE_SCOPES.values()}
    reads = {read for _, read in RESOURCE_SCOPES.values()}
    assert writes | reads <= policy_scopes()
    assert writes <= set(groups["gateway-admins"]), groups["gateway-admins"]
    assert reads <= set(groups["gateway-admin-readers"]), groups["gateway-admin-readers"]
    for write, read in RESOURCE_SCOPES.values():
        assert read in policy()["scopes"][write], f"{write} includes {read}"


def test_every_refusal_is_documented_in_the_admin_error_shape():
    document = admin_document()
    for method, path, operation in operations(document):
        responses = operation["responses"]
        write, read = RESOURCE_SCOPES[path.strip("/").split("/")[0]]
        assert operation["x-required-scope"] == (read if method == "get" else write), (method, path)
        wanted = {"401", "403", "429", "500"}
        if "{id}" in path:
            wanted.add("404")
        if operation.get("requestBody") or operation.get("parameters"):
            wanted.add("400")
        if operation.get("requestBody"):
            wanted |= {"413", "415"}
        if (method, path) in {("post", "/users"), ("post", "/apikeys/{id}/rotate")}:
            wanted.add("409")
        assert wanted <= set(responses), (method, path, sorted(wanted - set(responses)))
        for status, response in responses.items():
            if status[0] in "45" and (method, path, status) != ("get", "/system/health", "503"):
                assert response["$ref"].startswith("#/components/responses/"), (method, path, status)
                resolved = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
                schema = resolved["content"]["application/json"]["schema"]
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_the_documented_error_codes_follow_their_status():
    document = admin_document()
    codes = {"BadRequest": "bad_request", "Unauthorized": "unauthorized", "Forbidden": "forbidden",
             "NotFound": "not_found", "Conflict": "conflict", "PayloadTooLarge": "payload_too_large",
             "UnsupportedMediaType": "unsupported_media_type", "Throttled": "throttled", "Internal": "internal"}
    responses = document["components"]["responses"]
    assert set(responses) == set(codes)
    for name, code in codes.items():
        schema = responses[name]["content"]["application/json"]["schema"]
        assert schema["allOf"][1]["properties"]["error"]["properties"]["code"] == {"const": code}, name


def test_the_examples_conform_to_their_schemas():
    schemas = admin_document()["components"]["schemas"]
    for name, schema in schemas.items():
        if "example" in schema:
            assert admin_schema_errors(name, schema["example"]) == [], name


def conforms(name: str, value) -> bool:
    return admin_schema_errors(name, value) == []


def valid_create(**change) -> dict:
    body = {"user_id": "001", "name": "山田太郎", "email": "taro.yamada@example.com", "department": "sales",
            "start_date": "2024/4/1"}
    body.update(change)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("change,ok", [
    ({}, True),
    ({"user_id": "x" * 32}, True),
    ({"user_id": "x" * 33}, False),
    ({"user_id": ""}, False),
    ({"user_id": "a b"}, False),
    ({"user_id": "-1"}, False),
    ({"name": "=cmd|' /C calc'!A0"}, False),
    ({"name": "+1"}, False),
    ({"name": "-1"}, False),
    ({"name": "@SUM(A1)"}, False),
    ({"name": "\tx"}, False),
    ({"name": "a\u0007b"}, False),
    ({"name": "Smith, Jo"}, True),
    ({"job_title": "=1"}, False),
    ({"email": "a" * 53 + "@example.com"}, False),
    ({"email": "a" * 52 + "@example.com"}, True),
    ({"email": "not-an-address"}, False),
    ({"phone": "+81 3-1234-5678"}, True),
    ({"phone": "03-1234-5678"}, True),
    ({"phone": "+81312345678"}, True),
    ({"phone": "=1"}, False),
    ({"phone": "03-1234-abcd"}, False),
    ({"start_date": "2024/04/01"}, True),
    ({"start_date": "2024-04-01"}, True),
    ({"start_date": "2024-4-1"}, False),
    ({"start_date": "01/04/2024"}, False),
    ({"end_date": "2025/3/31"}, True),
    ({"status": "inactive"}, True),
    ({"status": "retired"}, False),
    ({"alias_id": "t.yamada"}, True),
    ({"job_title": None, "phone": None}, True),
    ({"email": None}, False),
    ({"department": None}, False),
    ({"start_date": None}, False),
    ({"sub": "x"}, False),
], ids=lambda v: json.dumps(v, ensure_ascii=True) if isinstance(v, dict) else str(v))
def test_create_user_holds_the_hr_files_rules(change, ok):
    assert conforms("CreateUser", valid_create(**change)) is ok


@pytest.mark.parametrize("body,ok", [
    ({}, False),
    ({"name": "Ok"}, True),
    ({"job_title": None, "phone": None, "end_date": None, "alias_id": None}, True),
    ({"name": None}, False),
    ({"email": None}, False),
    ({"department": None}, False),
    ({"start_date": None}, False),
    ({"status": None}, False),
    ({"nickname": "x"}, False),
    ({"user_id": "002"}, False),
    ({"end_date": "2025/3/31"}, True),
    ({"name": "=1"}, False),
], ids=lambda v: json.dumps(v, ensure_ascii=True) if isinstance(v, dict) else str(v))
def test_patch_user_clears_only_the_optional_fields(body, ok):
    assert conforms("PatchUser", body) is ok


def test_user_answers_iso_dates_and_the_department_id():
    user = admin_document()["components"]["schemas"]["User"]["example"]
    assert conforms("User", user)
    assert not conforms("User", {**user, "start_date": "2024/04/01"})
    assert not conforms("User", {**user, "hr_status": "retired"})
    assert not conforms("User", {**user, "status": "DISABLED"})
    assert not conforms("User", {**user, "password": "x"})
    missing = dict(user)
    del missing["alias_id"]
    assert not conforms("User", missing), "every field is present, null when it has no value"


def valid_key_request(**change) -> dict:
    body = {"name": "sales reporting bot", "department": "sales", "scopes": ["text:openai"]}
    body.update(change)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("change,ok", [
    ({}, True),
    ({"expires_in_days": 1}, True),
    ({"expires_in_days": 365}, True),
    ({"expires_in_days": 0}, False),
    ({"expires_in_days": 366}, False),
    ({"expires_in_days": 1.5}, False),
    ({"expires_in_days": "30"}, False),
    ({"name": "x" * 64}, True),
    ({"name": "x" * 65}, False),
    ({"name": ""}, False),
    ({"name": "   "}, False),
    ({"name": "a\tb"}, False),
    ({"name": "a\u0085b"}, False),
    ({"name": "営業 bot, v2"}, True),
    ({"name": None}, False),
    ({"department": None}, False),
    ({"department": ""}, False),
    ({"scopes": None}, False),
    ({"scopes": []}, False),
    ({"scopes": "text"}, False),
    ({"scopes": ["text", "audio:stt", "all"]}, True),
    ({"scopes": ["Text"]}, False),
    ({"scopes": ["admin"]}, False),
    ({"scopes": ["admin:users"]}, False),
    ({"scopes": ["text", "admin:apikeys:read"]}, False),
    ({"owner": "x"}, False),
    ({"key": "gwk_0123456789abcdef_" + "a" * 43}, False),
], ids=lambda v: json.dumps(v, ensure_ascii=True) if isinstance(v, dict) else str(v))
def test_an_api_key_request_holds_the_rules(change, ok):
    assert conforms("ApiKeyRequest", valid_key_request(**change)) is ok


def test_every_scope_of_the_policy_but_the_admin_ones_is_a_key_scope():
    for scope in sorted(policy_scopes()):
        assert conforms("ApiKeyScope", scope) is (not scope.startswith("admin")), scope


@pytest.mark.parametrize("body,ok", [
    ({}, True),
    ({"grace_seconds": 0}, True),
    ({"grace_seconds": 604800}, True),
    ({"grace_seconds": 604801}, False),
    ({"grace_seconds": -1}, False),
    ({"grace_seconds": "60"}, False),
    ({"grace_seconds": None}, False),
    ({"grace": 60}, False),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v))
def test_a_rotation_grace_is_bounded(body, ok):
    assert conforms("RotateRequest", body) is ok


def test_an_api_key_is_shown_only_when_issued():
    document = admin_document()["components"]["schemas"]
    view, issued = document["ApiKeyView"]["example"], document["IssuedApiKey"]["example"]
    assert conforms("ApiKeyView", view) and conforms("IssuedApiKey", issued)
    assert issued["key"].startswith(issued["api_key"]["prefix"] + "_")
    assert not conforms("ApiKeyView", {**view, "key": issued["key"]}), "a view never holds the key"
    assert not conforms("ApiKeyView", {**view, "hash": "0" * 64}), "nor its hash"
    assert not conforms("IssuedApiKey", {**issued, "key": issued["key"][:-1]})
    assert not conforms("ApiKeyView", {**view, "status": "disabled"})
    assert not conforms("ApiKeyView", {**view, "id": view["id"].upper()})
    missing = dict(view)
    del missing["revoked_at"]
    assert not conforms("ApiKeyView", missing), "every field is present, null when it has no value"


# --------------------------------------------------------------------------
# The document against the running admin API
# --------------------------------------------------------------------------


def generation_document() -> dict:
    """The document, with the configured departments as the only department values generated and the
    policy's scopes (not the admin ones) as the only key scopes (a department the deployment does not
    have, or a scope its policy does not define, is a 400 the behaviour tests cover)."""
    document = admin_document()
    departments = sorted(json.loads((REPO_ROOT / "config" / "gateway.json").read_text(encoding="utf-8"))["departments"])
    schemas = document["components"]["schemas"]
    schemas["Department"]["enum"] = departments
    schemas["DepartmentId"]["enum"] = departments
    schemas["ApiKeyScope"] = {"enum": sorted(s for s in policy_scopes() if not s.startswith("admin"))}
    for path in ("/users", "/apikeys"):
        for parameter in document["paths"][path]["get"]["parameters"]:
            if parameter["name"] == "department":
                parameter["schema"]["enum"] = departments
    return document


CONFIG = SchemathesisConfig.from_dict({
    "seed": SEED,
    "generation": {
        "mode": "positive",
        "max-examples": MAX_EXAMPLES,
        "database": "none",
        "allow-x00": False,
        "with-security-parameters": False,
    },
    "phases": {
        "examples": {"enabled": False},
        "coverage": {"enabled": False},
        "stateful": {"enabled": False},
        "fuzzing": {"enabled": True},
    },
})
SCHEMA = schemathesis.openapi.from_dict(generation_document(), config=CONFIG)


# The user that half of the generated ids are mapped to (by a hash of the id, so a seed gives the same run),
# so that operations on a user answer with a user, not only with 404s. Made (again, after a delete) by this
# test through the API.
TARGET = f"zt{unique_digits(9)}"


@pytest.fixture(scope="module")
def admin_token(make_user) -> str:
    return make_user(ADMIN_GROUP)["access_token"]


@pytest.fixture(scope="module")
def generated_keys(state, admin_token):
    """Ids of the API keys this test and its generated issues and rotations made: revoked at the end."""
    made: set[str] = set()
    yield made
    for key_id in made:
        admin_call(state, "POST", f"/apikeys/{key_id}/revoke", admin_token)


@pytest.fixture(scope="module")
def generated_users(state):
    """User ids that this test's creates made: removed from the pool at the end."""
    made: set[str] = set()
    yield made
    for user_id in made:
        delete_cognito_user(state, user_id)


def exists(state, user_id: str) -> bool:
    idp = aws_client(state, "cognito-idp")
    try:
        idp.admin_get_user(UserPoolId=state["user_pool_id"], Username=user_id)
    except idp.exceptions.UserNotFoundException:
        return False
    return True


def ensure_target(state, token: str, generated_users: set[str], operation: str) -> None:
    if not exists(state, TARGET):
        generated_users.add(TARGET)
        resp = admin_call(state, "POST", "/users", token, json={
            "user_id": TARGET, "name": "Schema Target", "email": f"{TARGET}@example.com", "department": "sales",
            "start_date": "2024/4/1"})
        assert resp.status_code == 201, (resp.status_code, resp.text[:500])
    if operation == "POST /users/{id}/password-reset":
        # A reset is for a user who has signed in: enabled, confirmed, with a verified address (generated
        # changes before may have undone any of these).
        idp = aws_client(state, "cognito-idp")
        pool = state["user_pool_id"]
        idp.admin_enable_user(UserPoolId=pool, Username=TARGET)
        idp.admin_update_user_attributes(UserPoolId=pool, Username=TARGET,
                                         UserAttributes=[{"Name": "email_verified", "Value": "true"}])
        confirm_cognito_user(state, TARGET)


def issue_key(state, token: str, generated_keys: set[str]) -> str:
    resp = admin_call(state, "POST", "/apikeys", token, json={
        "name": f"schema target {uuid.uuid4().hex[:8]}", "department": "sales", "scopes": ["text"]})
    assert resp.status_code == 201, (resp.status_code, resp.text[:500])
    key_id = resp.json()["api_key"]["id"]
    generated_keys.add(key_id)
    return key_id


# The key that half of the generated ids of GET /apikeys/{id} are mapped to (issued once, on demand).
KEY_TARGET: dict[str, str] = {}


def map_key_id(state, token: str, generated_keys: set[str], case) -> None:
    """Half the generated key ids (by a hash of the id) name a key this test issued: the one target for a
    read, a fresh key for a revoke or a rotation (which change it). The others name no key: 64 random
    bits."""
    key_id = case.path_parameters["id"]
    if zlib.crc32(key_id.encode()) % 2:
        return
    if case.method.upper() == "GET":
        if "id" not in KEY_TARGET:
            KEY_TARGET["id"] = issue_key(state, token, generated_keys)
        case.path_parameters["id"] = KEY_TARGET["id"]
    else:
        case.path_parameters["id"] = issue_key(state, token, generated_keys)


@SCHEMA.parametrize()
def test_the_admin_api_answers_as_its_document_says(case, state, admin_token, generated_users, generated_keys):
    operation = f"{case.method.upper()} {case.path}"
    if operation == "GET /users" and case.query:
        # A cursor is opaque: a generated one is an unknown value (400); the behaviour tests walk real ones.
        case.query.pop("cursor", None)
    user_id = (case.path_parameters or {}).get("id")
    if case.path.startswith("/apikeys/"):
        map_key_id(state, admin_token, generated_keys, case)
    elif user_id is not None:
        if zlib.crc32(user_id.encode()) % 2 == 0:
            ensure_target(state, admin_token, generated_users, operation)
            case.path_parameters["id"] = TARGET
        elif user_id not in generated_users and (
            # `.` and `..` are dot-segments, removed from the URL before any server sees it; any other id of
            # an existing user (the test's administrator, other tests' users) is not this test's to change.
            set(user_id) <= {"."} or (case.method.upper() != "GET" and exists(state, user_id))
        ):
            case.path_parameters["id"] = f"zz{uuid.uuid4().hex[:12]}"
    response = case.call_and_validate(
        base_url=admin_url(state),
        headers={"Authorization": f"Bearer {admin_token}"},
        checks=CHECKS,
        timeout=HTTP_TIMEOUT,
    )
    if operation == "POST /users" and response.status_code == 201:
        generated_users.add(response.json()["user_id"])
    if operation in ("POST /apikeys", "POST /apikeys/{id}/rotate") and response.status_code == 201:
        generated_keys.add(response.json()["api_key"]["id"])
