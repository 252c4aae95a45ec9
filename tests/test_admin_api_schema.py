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
  end. Departments likewise: half the generated department ids are mapped to a configured department (the
  others are 404). A generated settings change (`PUT /departments/{id}`) may only set budgets that cannot
  refuse anything (token limits of at least 10^12, no cost limit: a cost limit refuses unpriced models), and
  every department is put back to no budget at the end of the module.
- Department budgets and key usage, against the stack: every answer of `/departments` and
  `/apikeys/{id}/usage` (successes and refusals) conforms to the response the document declares for it;
  the settings rules the document states are exactly the ones the API applies (each body conforms to
  `SettingsUpdate` exactly when a PUT takes it); a key's request shows in its usage; a reader reads and
  cannot change, a gateway user is refused (403), no token is 401.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from datetime import datetime, timezone

import jsonschema
import pytest
import requests
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
    ADMIN_READER_GROUP,
    HTTP_TIMEOUT,
    REPO_ROOT,
    admin_call,
    admin_document,
    admin_schema_errors,
    admin_url,
    aws_client,
    confirm_cognito_user,
    delete_cognito_user,
    parse_rfc3339,
    unique_digits,
)

# Generated examples per operation; 23 operations stay well under a minute against the local stack.
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
    ("get", "/apikeys/{id}/usage"),
    ("get", "/departments"),
    ("get", "/departments/{id}"),
    ("put", "/departments/{id}"),
    ("get", "/departments/{id}/usage"),
    ("get", "/departments/summary"),
    ("get", "/reports/chargeback"),
    ("get", "/users/{id}/usage"),
}
# The scope pair (write, read) of each resource, by the path's first segment (policy/scopes.json;
# gateway_shared::scopes::admin_resource_scopes).
RESOURCE_SCOPES = {
    "system": ("admin:users", "admin:users:read"),
    "users": ("admin:users", "admin:users:read"),
    "apikeys": ("admin:apikeys", "admin:apikeys:read"),
    "departments": ("admin:billing", "admin:billing:read"),
    "reports": ("admin:billing", "admin:billing:read"),
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
             "UnsupportedMediaType": "unsupported_media_type", "Throttled": "throttled", "Internal": "internal",
             "UsagePlanNotApplied": "usage_plan_not_applied"}
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


U64_MAX = 2**64 - 1
# Settings bodies and whether the document's `SettingsUpdate` takes them; the live test below checks that
# the API takes exactly these (shared/src/budgets/settings.rs: serde, then `SettingsUpdate::check`).
SETTINGS_CASES = [
    ({}, True),
    ({"budget": {}, "user_budget": {}}, True),
    ({"budget": {"tokens_per_minute": None, "monthly_tokens": None, "monthly_cost_usd": None}}, True),
    ({"budget": {"tokens_per_minute": 0}}, True),
    ({"budget": {"monthly_tokens": U64_MAX}}, True),
    ({"budget": {"monthly_tokens": U64_MAX + 1}}, False),
    ({"budget": {"monthly_tokens": -1}}, False),
    ({"budget": {"monthly_tokens": 1.5}}, False),
    ({"budget": {"monthly_tokens": "10"}}, False),
    ({"budget": {"monthly_cost_usd": 0.01}}, True),
    ({"budget": {"monthly_cost_usd": 5}}, True),
    ({"budget": {"monthly_cost_usd": -0.01}}, False),
    ({"budget": {"monthly_cost_usd": "5"}}, False),
    ({"budget": {"daily_tokens": 1}}, False),
    ({"budget": None}, False),
    ({"budget": []}, False),
    ({"budget": [1000, 2000, 3.0]}, False),
    ({"user_budget": {"tokens_per_minute": 1000, "monthly_cost_usd": 20}}, True),
    ({"user_budget": {"monthly_cost_usd": -1}}, False),
    ({"user_budget": None}, False),
    ({"alert_thresholds_percent": []}, True),
    ({"alert_thresholds_percent": [1, 1000]}, True),
    ({"alert_thresholds_percent": [100, 50, 100]}, True),
    ({"alert_thresholds_percent": [50] * 10}, True),
    ({"alert_thresholds_percent": list(range(1, 12))}, False),
    ({"alert_thresholds_percent": [0]}, False),
    ({"alert_thresholds_percent": [1001]}, False),
    ({"alert_thresholds_percent": [-5]}, False),
    ({"alert_thresholds_percent": [50.5]}, False),
    ({"alert_thresholds_percent": None}, False),
    ({"alert_thresholds_percent": 80}, False),
    ({"contacts": []}, True),
    ({"contacts": ["lead@example.com", "o'brien+budget@mail.example.co.jp", "-x_%@a-b.example.org"]}, True),
    ({"contacts": ["a" * 52 + "@example.com"]}, True),
    ({"contacts": ["a" * 53 + "@example.com"]}, False),
    ({"contacts": [f"u{i}@example.com" for i in range(20)]}, True),
    ({"contacts": [f"u{i}@example.com" for i in range(21)]}, False),
    ({"contacts": ["not-mail"]}, False),
    ({"contacts": [".a@example.com"]}, False),
    ({"contacts": ["a.@example.com"]}, False),
    ({"contacts": ["a..b@example.com"]}, False),
    ({"contacts": ["a@example"]}, False),
    ({"contacts": ["a@-example.com"]}, False),
    ({"contacts": ["a@example-.com"]}, False),
    ({"contacts": ["a@example..com"]}, False),
    ({"contacts": ["a@example.c0m"]}, False),
    ({"contacts": ["a b@example.com"]}, False),
    ({"contacts": ["a@b@example.com"]}, False),
    ({"contacts": [1]}, False),
    ({"contacts": None}, False),
    ({"contacts": "lead@example.com"}, False),
    ({"department": "hr"}, False),
    ({"updated_by": "someone"}, False),
    ({"usage_plan": None}, True),
    ({"usage_plan": {"rate_limit": 10000, "burst_limit": 5000, "quota_per_day": 1_000_000_000}}, True),
    ({"usage_plan": {"rate_limit": 1, "burst_limit": 1, "quota_per_day": 1}}, True),
    ({"usage_plan": {"rate_limit": 0, "burst_limit": 1, "quota_per_day": 1}}, False),
    ({"usage_plan": {"rate_limit": 10001, "burst_limit": 1, "quota_per_day": 1}}, False),
    ({"usage_plan": {"rate_limit": 1, "burst_limit": 5001, "quota_per_day": 1}}, False),
    ({"usage_plan": {"rate_limit": 1, "burst_limit": 1, "quota_per_day": 1_000_000_001}}, False),
    ({"usage_plan": {"rate_limit": 1.5, "burst_limit": 1, "quota_per_day": 1}}, False),
    ({"usage_plan": {"rate_limit": 1, "burst_limit": 1}}, False),
    ({"usage_plan": {"rate_limit": 1, "burst_limit": 1, "quota_per_day": 1, "period": "WEEK"}}, False),
    ({"usage_plan": []}, False),
]
SETTINGS_IDS = [json.dumps(body, ensure_ascii=True)[:80] for body, _ in SETTINGS_CASES]
LIVE_SETTINGS_CASES = [
    pytest.param(body, ok, id=case_id)
    for (body, ok), case_id in zip(SETTINGS_CASES, SETTINGS_IDS)
]


@pytest.mark.parametrize("body,ok", SETTINGS_CASES, ids=SETTINGS_IDS)
def test_a_settings_update_holds_the_budget_rules(body, ok):
    assert conforms("SettingsUpdate", body) is ok


def test_department_settings_answer_every_field_and_thresholds_once():
    schemas = admin_document()["components"]["schemas"]
    settings = schemas["DepartmentSettings"]["example"]
    assert conforms("DepartmentSettings", settings)
    never_set = {"department": "sales", "alert_thresholds_percent": [80, 100], "contacts": [], "updated_at": None,
                 "updated_by": None, "usage_plan": None, "usage_plan_source": None, **{part: dict.fromkeys(schemas["Limits"]["properties"])
                                        for part in ("budget", "user_budget")}}
    assert conforms("DepartmentSettings", never_set)
    for field in settings:
        assert not conforms("DepartmentSettings", {k: v for k, v in settings.items() if k != field}), field
    assert not conforms("DepartmentSettings", {**settings, "budget": {"monthly_tokens": 1}}), \
        "every limit is answered, null when none"
    assert not conforms("DepartmentSettings", {**settings, "alert_thresholds_percent": [80, 80]})
    assert not conforms("DepartmentSettings", {**settings, "owner": "x"})
    assert not conforms("DepartmentList", {"departments": [{**settings, "contacts": ["x"]}]})


def test_usage_answers_hold_counts_limits_and_shares():
    schemas = admin_document()["components"]["schemas"]
    department, key = schemas["DepartmentUsage"]["example"], schemas["ApiKeyUsage"]["example"]
    assert conforms("DepartmentUsage", department) and conforms("ApiKeyUsage", key)
    assert conforms("DepartmentUsage", {**department, "percent_of_monthly_tokens": 250.0}), "a share may pass 100"
    assert conforms("DepartmentUsage", {**department, "monthly_tokens_limit": None, "percent_of_monthly_tokens": None})
    assert not conforms("DepartmentUsage", {**department, "tokens": -1})
    assert not conforms("DepartmentUsage", {**department, "month": "2026-13"})
    assert conforms("ApiKeyUsage", {**key, "monthly_tokens_limit": 1000, "percent_of_monthly_tokens": 12.5}), \
        "a key's limits are its department's per-user ones"
    assert not conforms("ApiKeyUsage", {**key, "monthly_tokens_limit": -1})
    for field in key:
        assert not conforms("ApiKeyUsage", {k: v for k, v in key.items() if k != field}), field


@pytest.mark.parametrize("segment,ok", [
    ("sales", True), ("accounting", True), ("a-b_c9", True), ("x" * 64, True),
    ("x" * 65, False), ("", False), ("Sales", False), ("a.b", False), ("..", False), ("営業部", False),
    ("a%2Fb", False),
])
def test_a_department_path_segment_is_the_routers(segment, ok):
    assert conforms("DepartmentSegment", segment) is ok


@pytest.mark.parametrize("month,ok", [
    ("2026-11", True), ("2026-01", True), ("2026-12", True), ("2026-13", False), ("2026-00", False),
    ("2026-1", False), ("26-11", False), ("2026/11", False), ("2026-11-01", False), ("2026-+1", False),
])
def test_a_usage_month_is_yyyy_mm(month, ok):
    assert conforms("UsageMonth", month) is ok


# --------------------------------------------------------------------------
# The document against the running admin API
# --------------------------------------------------------------------------


GATEWAY_CONFIG = json.loads((REPO_ROOT / "config" / "gateway.json").read_text(encoding="utf-8"))
DEPARTMENTS = sorted(GATEWAY_CONFIG["departments"])
# How long the provider routes may keep a department's old settings (the local stack mirrors dev).
SETTINGS_CACHE_S = GATEWAY_CONFIG["environments"]["dev"]["identity"]["revocationCacheSeconds"]
# Generated settings changes set only token limits no request comes near, and no cost limit (which refuses
# unpriced models): even a route still holding them after the reset refuses nothing.
HARMLESS_TOKENS = 10**12


def harmless_limits() -> dict:
    tokens = {"type": ["integer", "null"], "minimum": HARMLESS_TOKENS, "maximum": U64_MAX}
    return {"type": "object", "additionalProperties": False,
            "properties": {"tokens_per_minute": tokens, "monthly_tokens": dict(tokens),
                           "monthly_cost_usd": {"type": "null"}}}


def generation_document() -> dict:
    """The document, with the configured departments as the only department values generated and the
    policy's scopes (not the admin ones) as the only key scopes (a department the deployment does not
    have, or a scope its policy does not define, is a 400 the behaviour tests cover); settings changes set
    only harmless limits (the answers are still checked against the document's own schemas)."""
    document = admin_document()
    departments = DEPARTMENTS
    schemas = document["components"]["schemas"]
    for part in ("budget", "user_budget"):
        schemas["SettingsUpdate"]["properties"][part] = harmless_limits()
    # A generated plan could throttle the department's other tests: generated changes keep the deployment's.
    schemas["SettingsUpdate"]["properties"]["usage_plan"] = {"type": "null"}
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
def admin_user(make_user) -> dict:
    return make_user(ADMIN_GROUP)


@pytest.fixture(scope="module")
def admin_token(admin_user) -> str:
    return admin_user["access_token"]


def reset_departments(state, token: str, departments=DEPARTMENTS) -> None:
    """Every department back to no budget (`PUT {}`)."""
    for department in departments:
        answer = admin_call(state, "PUT", f"/departments/{department}", token, json={})
        assert answer.status_code == 200, (department, answer.status_code, answer.text[:500])
        assert answer.json()["budget"] == answer.json()["user_budget"] == dict.fromkeys(
            ("tokens_per_minute", "monthly_tokens", "monthly_cost_usd")), answer.text


@pytest.fixture(scope="module")
def departments_reset(state, admin_token):
    """Puts every configured department back to no budget when the module ends; when a test set a limit
    that can refuse requests (`flags["refusing"]`), waits out the routes' settings cache too, so no later
    test meets it."""
    flags = {"refusing": False}
    yield flags
    reset_departments(state, admin_token)
    if flags["refusing"]:
        time.sleep(SETTINGS_CACHE_S + 1)


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


def map_department_id(case) -> None:
    """Half the generated department ids (by a hash of the id) name a configured department; the others
    stay as generated (almost always no department: 404)."""
    digest = zlib.crc32(case.path_parameters["id"].encode())
    if digest % 2 == 0:
        case.path_parameters["id"] = DEPARTMENTS[(digest // 2) % len(DEPARTMENTS)]


@SCHEMA.parametrize()
def test_the_admin_api_answers_as_its_document_says(case, state, admin_token, generated_users, generated_keys,
                                                   departments_reset):
    operation = f"{case.method.upper()} {case.path}"
    if operation == "GET /users" and case.query:
        # A cursor is opaque: a generated one is an unknown value (400); the behaviour tests walk real ones.
        case.query.pop("cursor", None)
    user_id = (case.path_parameters or {}).get("id")
    if case.path.startswith("/apikeys/{id}"):
        map_key_id(state, admin_token, generated_keys, case)
    elif case.path.startswith("/departments/{id}"):
        map_department_id(case)
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


# --------------------------------------------------------------------------
# Department budgets and key usage against the running admin API
# --------------------------------------------------------------------------

DOCUMENT = admin_document()
_RESPONSE_VALIDATORS: dict[tuple[str, str, str], jsonschema.Draft202012Validator] = {}
NO_LIMITS = {"tokens_per_minute": None, "monthly_tokens": None, "monthly_cost_usd": None}
# The department the focused tests change (put back to no budget by each of them, and by the module).
DEPARTMENT = "hr"


def documented(method: str, path: str, response: requests.Response, status: int):
    """The answer's JSON, once its status is `status` and it conforms to the response the document declares
    for `method path` at that status (the operation's own, or the shared error response it refers to)."""
    assert response.status_code == status, (method, path, response.status_code, response.text[:500])
    declared = DOCUMENT["paths"][path][method.lower()]["responses"].get(str(status))
    assert declared is not None, f"{method} {path} does not document {status}"
    key = (method, path, str(status))
    validator = _RESPONSE_VALIDATORS.get(key)
    if validator is None:
        if "$ref" in declared:
            declared = DOCUMENT["components"]["responses"][declared["$ref"].rsplit("/", 1)[1]]
        validator = jsonschema.Draft202012Validator(
            {"$schema": "https://json-schema.org/draft/2020-12/schema",
             "allOf": [declared["content"]["application/json"]["schema"]],
             "components": DOCUMENT["components"]},
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        _RESPONSE_VALIDATORS[key] = validator
    assert response.headers.get("content-type", "").split(";")[0].strip() == "application/json", response.headers
    body = response.json()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == [], (method, path, status, body)
    return body


def current_months() -> set[str]:
    """This month (UTC), and the next one when a test might straddle midnight at a month's end."""
    now = time.time()
    return {datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m") for t in (now, now + 120)}


def test_every_department_answers_its_settings_and_usage_as_documented(state, admin_token):
    listed = documented("GET", "/departments", admin_call(state, "GET", "/departments", admin_token), 200)
    assert [d["department"] for d in listed["departments"]] == DEPARTMENTS, "every configured one, by id"
    for entry in listed["departments"]:
        department = entry["department"]
        one = admin_call(state, "GET", f"/departments/{department}", admin_token)
        assert documented("GET", "/departments/{id}", one, 200) == entry
        usage = documented("GET", "/departments/{id}/usage",
                           admin_call(state, "GET", f"/departments/{department}/usage", admin_token), 200)
        assert usage["department"] == department and usage["month"] in current_months(), usage
        assert usage["monthly_tokens_limit"] == entry["budget"]["monthly_tokens"], (usage, entry)
        assert usage["monthly_cost_usd_limit"] == entry["budget"]["monthly_cost_usd"], (usage, entry)
        past = documented("GET", "/departments/{id}/usage", admin_call(
            state, "GET", f"/departments/{department}/usage", admin_token, params={"month": "2001-02"}), 200)
        assert past["month"] == "2001-02" and (past["tokens"], past["cost_usd"], past["requests"]) == (0, 0, 0), past


def test_a_settings_change_answers_as_documented_and_is_undone(state, admin_user, admin_token, departments_reset):
    path = f"/departments/{DEPARTMENT}"
    settings = {
        "budget": {"tokens_per_minute": 10**12, "monthly_tokens": 10**13, "monthly_cost_usd": 10**6},
        "user_budget": {"monthly_tokens": 10**12},
        "alert_thresholds_percent": [100, 50, 100],
        "contacts": ["hr-budget@example.com", "finance.lead@example.co.jp"],
    }
    departments_reset["refusing"] = True  # a cost limit refuses unpriced models
    try:
        started = time.time()
        put = documented("PUT", "/departments/{id}", admin_call(state, "PUT", path, admin_token, json=settings), 200)
        assert put["department"] == DEPARTMENT
        assert put["budget"] == settings["budget"]
        assert put["user_budget"] == {**NO_LIMITS, "monthly_tokens": 10**12}
        assert put["alert_thresholds_percent"] == [50, 100], "sorted, each once"
        assert put["contacts"] == settings["contacts"]
        assert put["updated_by"] == admin_user["username"]
        assert started - 5 <= parse_rfc3339(put["updated_at"]) <= time.time() + 5, put["updated_at"]
        assert documented("GET", "/departments/{id}", admin_call(state, "GET", path, admin_token), 200) == put
        listed = documented("GET", "/departments", admin_call(state, "GET", "/departments", admin_token), 200)
        assert next(d for d in listed["departments"] if d["department"] == DEPARTMENT) == put
        usage = documented("GET", "/departments/{id}/usage",
                           admin_call(state, "GET", f"{path}/usage", admin_token), 200)
        assert (usage["monthly_tokens_limit"], usage["monthly_cost_usd_limit"]) == (10**13, 10**6), usage
        assert isinstance(usage["percent_of_monthly_tokens"], (int, float)), usage
        assert isinstance(usage["percent_of_monthly_cost"], (int, float)), usage
    finally:
        reset_departments(state, admin_token, [DEPARTMENT])
    cleared = documented("GET", "/departments/{id}", admin_call(state, "GET", path, admin_token), 200)
    assert cleared["budget"] == cleared["user_budget"] == NO_LIMITS
    assert (cleared["alert_thresholds_percent"], cleared["contacts"]) == ([80, 100], [])
    usage = documented("GET", "/departments/{id}/usage", admin_call(state, "GET", f"{path}/usage", admin_token), 200)
    assert [usage[f] for f in ("monthly_tokens_limit", "monthly_cost_usd_limit", "percent_of_monthly_tokens",
                               "percent_of_monthly_cost")] == [None] * 4, usage


def test_department_refusals_are_documented(state, admin_token, departments_reset):
    path = f"/departments/{DEPARTMENT}"
    before = documented("GET", "/departments/{id}", admin_call(state, "GET", path, admin_token), 200)
    for segment in ("nowhere", "Sales", "x" * 65, "a.b", "sales%20"):
        for method, template, suffix in (("GET", "/departments/{id}", ""), ("PUT", "/departments/{id}", ""),
                                         ("GET", "/departments/{id}/usage", "/usage")):
            answer = admin_call(state, method, f"/departments/{segment}{suffix}", admin_token,
                                **({"json": {}} if method == "PUT" else {}))
            assert documented(method, template, answer, 404)["error"]["code"] == "not_found"
    # Not configured is 404 whatever the body.
    documented("PUT", "/departments/{id}", admin_call(state, "PUT", "/departments/nowhere", admin_token,
                                                      json={"budget": None}), 404)
    for month in ("2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-11-01", "x"):
        documented("GET", "/departments/{id}/usage",
                   admin_call(state, "GET", f"{path}/usage", admin_token, params={"month": month}), 400)
    documented("PUT", "/departments/{id}", admin_call(
        state, "PUT", path, admin_token, data="{}", headers={"content-type": "text/plain"}), 415)
    for raw in ("", "[]", "{", '"budget"'):
        documented("PUT", "/departments/{id}", admin_call(
            state, "PUT", path, admin_token, data=raw, headers={"content-type": "application/json"}), 400)
    broken = documented("PUT", "/departments/{id}", admin_call(state, "PUT", path, admin_token, json={
        "budget": {"monthly_cost_usd": -1}, "user_budget": {"monthly_cost_usd": -2},
        "alert_thresholds_percent": [0, 80], "contacts": ["not-mail", "ok@example.com", "a..b@example.com"]}), 400)
    fields = [d["field"] for d in broken["error"]["details"]]
    assert fields == ["budget.monthly_cost_usd", "user_budget.monthly_cost_usd", "alert_thresholds_percent",
                      "contacts", "contacts"], broken
    unknown = documented("PUT", "/departments/{id}", admin_call(
        state, "PUT", path, admin_token, json={"budget": {"monthly_tokens": 1, "daily": 2}}), 400)
    assert [d["field"] for d in unknown["error"]["details"]] == ["body"], unknown
    assert "daily" in unknown["error"]["message"], unknown
    after = documented("GET", "/departments/{id}", admin_call(state, "GET", path, admin_token), 200)
    assert after == before, "a refused change changes nothing"


@pytest.mark.parametrize("body,ok", LIVE_SETTINGS_CASES)
def test_the_api_takes_exactly_the_settings_the_document_takes(state, admin_token, departments_reset, body, ok):
    departments_reset["refusing"] = True  # some of these limits refuse requests (0 tokens, cost limits)
    path = f"/departments/{DEPARTMENT}"
    answer = admin_call(state, "PUT", path, admin_token, json=body)
    try:
        if ok:
            settings = documented("PUT", "/departments/{id}", answer, 200)
            for part in ("budget", "user_budget"):
                assert settings[part] == {**NO_LIMITS, **body.get(part, {})}, (part, settings)
            wanted = sorted(set(body.get("alert_thresholds_percent", [80, 100])))
            assert settings["alert_thresholds_percent"] == wanted, settings
            assert settings["contacts"] == body.get("contacts", []), settings
            if body.get("usage_plan"):
                assert (settings["usage_plan"], settings["usage_plan_source"]) == (body["usage_plan"], "settings")
            else:
                assert settings["usage_plan_source"] == "deployment", settings
        else:
            refusal = documented("PUT", "/departments/{id}", answer, 400)
            assert refusal["error"]["details"], refusal
    finally:
        if answer.status_code == 200:
            reset_departments(state, admin_token, [DEPARTMENT])


@pytest.mark.parametrize("month", ["2026-+1", "2026-+9"])
def test_a_signed_month_is_refused(state, admin_token, month):
    documented("GET", "/departments/{id}/usage",
               admin_call(state, "GET", f"/departments/{DEPARTMENT}/usage", admin_token, params={"month": month}), 400)


def test_a_keys_usage_answers_as_documented_and_counts_its_requests(state, admin_token, generated_keys):
    issued = admin_call(state, "POST", "/apikeys", admin_token, json={
        "name": f"schema usage {uuid.uuid4().hex[:8]}", "department": "sales", "scopes": ["text"]})
    assert issued.status_code == 201, issued.text
    key, key_id = issued.json()["key"], issued.json()["api_key"]["id"]
    generated_keys.add(key_id)
    path = f"/apikeys/{key_id}/usage"
    fresh = documented("GET", "/apikeys/{id}/usage", admin_call(state, "GET", path, admin_token), 200)
    assert fresh["month"] in current_months(), fresh
    assert {k: fresh[k] for k in ("id", "department", "tokens", "cost_usd", "requests", "last_used_at")} == {
        "id": key_id, "department": "sales", "tokens": 0, "cost_usd": 0, "requests": 0, "last_used_at": None}

    # One priced request with the key (accepted within about a second of its issue).
    deadline = time.monotonic() + 10
    while True:
        answer = requests.post(
            f"{state['base_url']}/azure-openai/openai/deployments/gpt-4o-mini/chat/completions",
            params={"api-version": "2024-10-21"}, headers={"api-key": key}, timeout=HTTP_TIMEOUT,
            json={"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "usage"}]})
        if answer.status_code != 401 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert answer.status_code == 200, answer.text[:500]
    # The audit writer settles it to the key's counter (and records the key's last use) seconds later.
    deadline = time.monotonic() + 45
    while True:
        usage = documented("GET", "/apikeys/{id}/usage", admin_call(state, "GET", path, admin_token), 200)
        if (usage["requests"] >= 1 and usage["last_used_at"]) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert usage["requests"] == 1 and usage["tokens"] > 0 and usage["cost_usd"] > 0, usage
    assert usage["last_used_at"] is not None, usage

    past = documented("GET", "/apikeys/{id}/usage",
                      admin_call(state, "GET", path, admin_token, params={"month": "2001-02"}), 200)
    assert (past["month"], past["tokens"], past["requests"]) == ("2001-02", 0, 0), past
    for month in ("2026-13", "2026-1", "x"):
        documented("GET", "/apikeys/{id}/usage",
                   admin_call(state, "GET", path, admin_token, params={"month": month}), 400)
    for unknown in (uuid.uuid4().hex[:16], "XYZ", key_id.upper()):
        documented("GET", "/apikeys/{id}/usage",
                   admin_call(state, "GET", f"/apikeys/{unknown}/usage", admin_token), 404)


def test_readers_read_budgets_and_usage_and_gateway_users_are_refused(state, make_user, admin_token,
                                                                      generated_keys):
    reader = make_user(ADMIN_READER_GROUP)["access_token"]
    user = make_user("gateway-text")["access_token"]
    key_id = issue_key(state, admin_token, generated_keys)
    reads = [("/departments", "/departments"), ("/departments/{id}", "/departments/sales"),
             ("/departments/{id}/usage", "/departments/sales/usage"), ("/apikeys/{id}/usage", f"/apikeys/{key_id}/usage")]
    for template, path in reads:
        documented("GET", template, admin_call(state, "GET", path, reader), 200)
        refused = documented("GET", template, admin_call(state, "GET", path, user), 403)
        assert refused["error"]["code"] == "forbidden"
        documented("GET", template, admin_call(state, "GET", path, None), 401)
    before = admin_call(state, "GET", "/departments/sales", admin_token).json()
    change = {"budget": {"monthly_tokens": 10**12}}
    for token, status in ((reader, 403), (user, 403), (None, 401)):
        documented("PUT", "/departments/{id}", admin_call(state, "PUT", "/departments/sales", token, json=change), status)
    assert admin_call(state, "GET", "/departments/sales", admin_token).json() == before, "a refused change changes nothing"
