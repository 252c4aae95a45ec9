"""API keys for departments and applications, through the local stack (issue 13; document:
schemas/admin-api.openapi.yaml, `/apikeys`, whose component schemas every admin answer here is checked
against).

- Issuing: a key `gwk_<16 hex>_<43 base64url>` shown once; the table holds only its SHA-256; every rule
  of a request is named at once; reads never show the key or its hash.
- Who may administer keys: `admin:apikeys` writes, `admin:apikeys:read` reads; a gateway user is 403, no
  token 401, and an API key is 403 on the whole admin API even when its record holds admin scopes.
- Using a key: accepted in every place the stock SDKs put a key (openai api_key and azure_ad_token,
  boto3's AWS_BEARER_TOKEN_BEDROCK and a raw Bearer header, google-genai's api_key and `?key=`), within
  about a second of its issue; the principal is the key (`apikey:<id>`, its name and department); its
  scopes rule (403 in the provider's shape); nothing of it reaches the provider.
- Refusals: a malformed, unknown or altered key is 401 at once; a revoked or expired one within the
  authorizer's revocation cache bound; all with the same words.
- Rotation: a successor with the same name, department and scopes; the old key works for the grace and
  is expired at once with a grace of 0; a revoked, expired or rotated key cannot be rotated (409).
- Audit: every issue, rotation and revocation is an admin event without the key or its hash; a key's
  use sets `last_used_at`.

Transport-independent: every provider call here goes through whichever transport the stack runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets as random_source
import time
from datetime import datetime, timezone

import jsonschema
import pytest

import helpers
from adapters import ADAPTERS
from contract import (
    Adapter,
    Session,
    assert_clean_upstream,
    assert_gateway_error,
    assert_request_id_headers,
    expect_error as expect_sdk_error,
    expected_reply,
)
from helpers import (
    ADMIN_GROUP,
    ADMIN_READER_GROUP,
    admin_call,
    admin_events,
    admin_schema_errors,
    audit_schema,
    aws_client,
    expired_claims,
    parse_rfc3339,
    sign_with_moto_key,
    unique_name,
    unique_prompt,
    unverified_claims,
    wait_for_audit,
)

API_KEY_RE = re.compile(r"^gwk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")
# The words of every authentication failure, on the provider routes and the admin API alike.
UNAUTHORIZED = "Unauthorized: the gateway token or API key is missing, expired or invalid."
# A new key is accepted within about a second (the authorizer polls its mirror again on an unknown key at
# most once a second); this is that second with the time a request takes through the stack.
NEW_KEY_WITHIN_S = 5.0  # about a second, plus moto and a loaded 2-core machine
# A margin over the authorizer's revocation cache bound: the time a request takes through the stack.
REVOCATION_MARGIN_S = 3.0
# The audit writer records a key's last use seconds after the request.
LAST_USED_WITHIN_S = 30.0
DEFAULT_LIFETIME_S = 90 * 86400
DEFAULT_GRACE_S = 86400
# Every (provider, credential place) a key may travel in: the contract's adapters, each SDK as users build it.
PLACES = [pytest.param(a, place, id=f"{a.name}-{place}") for a in ADAPTERS for place in a.places]
DEFAULT_PLACES = [pytest.param(a, a.default_place, id=f"{a.name}-{a.default_place}") for a in ADAPTERS]
BY_NAME = {a.name: a for a in ADAPTERS}


# --------------------------------------------------------------------------
# Callers, and the admin API's answers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(make_user) -> dict:
    return make_user(ADMIN_GROUP)


@pytest.fixture(scope="module")
def reader(make_user) -> dict:
    return make_user(ADMIN_READER_GROUP)


@pytest.fixture(scope="module")
def issued(state, admin):
    """issued(**body) -> the 201 answer {"key", "api_key"} of a key this module issues (a unique name and
    the text scope unless given). The module's keys are revoked at the end."""
    made: list[str] = []

    def _issue(**body) -> dict:
        request = {"name": unique_name("e2e-key"), "department": "sales", "scopes": ["text"], **body}
        answer = expect_json(admin_call(state, "POST", "/apikeys", admin["access_token"], json=request), 201,
                             "IssuedApiKey")
        made.append(answer["api_key"]["id"])
        return answer

    yield _issue
    for key_id in made:
        admin_call(state, "POST", f"/apikeys/{key_id}/revoke", admin["access_token"])


def expect_json(resp, status: int, schema: str | None = None):
    """The response's JSON body, after checking status, media type and (when named) its component schema."""
    assert resp.status_code == status, (resp.request.method, resp.url, resp.status_code, resp.text[:800])
    media_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    assert media_type == "application/json", (resp.url, resp.headers.get("content-type"))
    body = resp.json()
    if schema is not None:
        errors = admin_schema_errors(schema, body)
        assert not errors, (schema, errors, body)
    return body


def expect_error(resp, status: int, code: str) -> dict:
    """The admin error shape with the code of its status."""
    body = expect_json(resp, status, "Error")
    assert body["error"]["code"] == code, body
    return body["error"]


def error_fields(resp) -> list[str]:
    error = expect_error(resp, 400, "bad_request")
    assert error.get("details"), f"a 400 for a broken rule names the field in details: {error}"
    return [d["field"] for d in error["details"]]


def get_key(state, token: str, key_id: str) -> dict:
    return expect_json(admin_call(state, "GET", f"/apikeys/{key_id}", token), 200, "ApiKeyView")


def list_keys(state, token: str, **params) -> list[dict]:
    return expect_json(admin_call(state, "GET", "/apikeys", token, params=params), 200, "ApiKeyList")["api_keys"]


def rotate(state, admin, key_id: str, **kwargs) -> dict:
    return expect_json(admin_call(state, "POST", f"/apikeys/{key_id}/rotate", admin["access_token"], **kwargs),
                       201, "IssuedApiKey")


def revoke(state, admin, key_id: str) -> dict:
    return expect_json(admin_call(state, "POST", f"/apikeys/{key_id}/revoke", admin["access_token"]), 200,
                       "ApiKeyView")


def named(state, token: str, name: str) -> list[dict]:
    return [k for k in list_keys(state, token) if k["name"] == name]


# --------------------------------------------------------------------------
# Using a key through the stock SDKs (tests/adapters)
# --------------------------------------------------------------------------


def staleness_bound(state) -> float:
    return float(state["functions"]["authorizer"]["GATEWAY_REVOCATION_CACHE_SECS"]) + REVOCATION_MARGIN_S


def status_of(session: Session, exc: BaseException) -> int | None:
    """The HTTP status of an exception the session's client raised, or None if it is not one of its errors."""
    if not isinstance(exc, session.error_class(401)):
        return None
    return session.read_error(exc).status


def call_until_accepted(session: Session, prompt: str, within: float = NEW_KEY_WITHIN_S):
    """The reply to `prompt` once the gateway accepts the session's key, retrying its 401s for `within`
    seconds (a new key reaches the authorizer's mirror within about a second); (reply, seconds taken)."""
    start = time.monotonic()
    while True:
        try:
            return session.call(prompt), time.monotonic() - start
        except Exception as exc:  # noqa: BLE001 - only the client's own 401 is retried
            if status_of(session, exc) != 401 or time.monotonic() - start > within:
                raise
        time.sleep(0.1)


def call_until_refused(session: Session, within: float):
    """The client's 401 error (as SeenError) once the gateway refuses the session's key; fails if it still
    accepts it after `within` seconds, or answers anything but 200 or 401."""
    start, seen = time.monotonic(), []
    while True:
        try:
            session.call(unique_prompt("still accepted?"))
            seen.append(200)
        except Exception as exc:  # noqa: BLE001
            status = status_of(session, exc)
            if status != 401:
                raise
            return session.read_error(exc), time.monotonic() - start
        if time.monotonic() - start > within:
            pytest.fail(f"the key was still accepted {within:.0f} s later ({len(seen)} calls answered 200)")
        time.sleep(0.25)


def assert_refused(provider: Adapter, session: Session) -> str:
    """One call refused with 401 in the provider's shape, raised as the SDK's exception, with the words every
    authentication failure has; the request id."""
    error = expect_sdk_error(session, 401, lambda: session.call(unique_prompt("refused key")))
    return assert_unauthorized(provider, error)


def assert_unauthorized(provider: Adapter, error) -> str:
    request_id = assert_gateway_error(provider, error, 401)
    assert error.message.startswith(UNAUTHORIZED), error.message
    return request_id


def key_principal(answer: dict) -> dict:
    view = answer["api_key"]
    return {"subject": f"apikey:{view['id']}", "username": view["name"], "department": view["department"],
            "client_id": None, "auth_method": "api-key"}


# --------------------------------------------------------------------------
# The key table, read and written directly (moto)
# --------------------------------------------------------------------------


def table_items(state) -> list[dict]:
    ddb = aws_client(state, "dynamodb")
    items, start = [], {}
    while True:
        page = ddb.scan(TableName=state["identity"]["apikey_table"], ConsistentRead=True, **start)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def new_key_text() -> tuple[str, str]:
    """A well-formed key no one issued: (the key, its id)."""
    key_id = random_source.token_hex(8)
    secret = base64.urlsafe_b64encode(random_source.token_bytes(32)).rstrip(b"=").decode()
    key = f"gwk_{key_id}_{secret}"
    assert API_KEY_RE.match(key) and len(key) == 64, key
    return key, key_id


def put_record(state, *, scopes: list[str], expires_at: int, department: str = "sales") -> tuple[str, str]:
    """A key written into the table as the admin API writes one, bypassing its rules (admin scopes, a past
    expiry), with the update marks the authorizer's mirror polls for: (the key, its id)."""
    key, key_id = new_key_text()
    now_ms = int(time.time() * 1000)
    aws_client(state, "dynamodb").put_item(TableName=state["identity"]["apikey_table"], Item={
        "key_id": {"S": key_id},
        "hash": {"S": hashlib.sha256(key.encode()).hexdigest()},
        "name": {"S": unique_name("e2e-direct")},
        "department": {"S": department},
        "scopes": {"L": [{"S": s} for s in scopes]},
        "created_at": {"S": datetime.fromtimestamp(now_ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z")},
        "created_by": {"S": "test_apikeys"},
        "expires_at": {"N": str(expires_at)},
        "rev": {"S": "r"},
        "updated_ms": {"N": str(now_ms)},
    })
    return key, key_id


# --------------------------------------------------------------------------
# Issuing
# --------------------------------------------------------------------------


def test_an_issued_key_has_its_form_and_is_shown_only_once(state, admin, reader, issued):
    name = unique_name("e2e-key")
    before = time.time()
    answer = issued(name=name, department="engineering", scopes=["text:openai", "audio"])
    after = time.time()
    key, view = answer["key"], answer["api_key"]
    assert API_KEY_RE.match(key) and len(key) == 64, key
    assert view["id"] == key[4:20] and view["prefix"] == f"gwk_{view['id']}", (key, view)
    assert (view["name"], view["department"], view["scopes"], view["status"]) == (
        name, "engineering", ["text:openai", "audio"], "active"), view
    assert view["created_by"] == admin["username"], view
    created = parse_rfc3339(view["created_at"])
    assert before - 2 <= created <= after + 2, view
    assert abs(parse_rfc3339(view["expires_at"]) - (created + DEFAULT_LIFETIME_S)) <= 2, "90 days by default"
    assert all(view[f] is None for f in ("revoked_at", "revoked_by", "rotated_from", "replaced_by", "last_used_at"))

    # Every later answer shows the key's id, never the key nor any part of its secret.
    secret = key[21:]
    for caller in (admin, reader):
        shown = get_key(state, caller["access_token"], view["id"])
        assert shown == view, (shown, view)
        listed = admin_call(state, "GET", "/apikeys", caller["access_token"])
        assert view in expect_json(listed, 200, "ApiKeyList")["api_keys"]
        assert secret not in listed.text and hashlib.sha256(key.encode()).hexdigest() not in listed.text


@pytest.mark.parametrize("days", [1, 365])
def test_a_key_lives_the_days_it_is_given(issued, days):
    view = issued(expires_in_days=days)["api_key"]
    lifetime = parse_rfc3339(view["expires_at"]) - parse_rfc3339(view["created_at"])
    assert abs(lifetime - days * 86400) <= 2, view


def test_the_table_keeps_only_the_keys_hash(state, issued):
    answer = issued()
    key, key_id = answer["key"], answer["api_key"]["id"]
    items = table_items(state)
    ours = [i for i in items if i["key_id"]["S"] == key_id]
    assert len(ours) == 1, f"one record under key_id {key_id}"
    assert ours[0]["hash"]["S"] == hashlib.sha256(key.encode()).hexdigest(), ours[0]
    dumped = json.dumps(items)
    assert key not in dumped and key[21:] not in dumped, "the key (or its secret) is in the table"


def test_every_issued_key_is_different(issued):
    answers = [issued() for _ in range(3)]
    assert len({a["key"] for a in answers}) == 3 and len({a["api_key"]["id"] for a in answers}) == 3


# --------------------------------------------------------------------------
# The request's rules
# --------------------------------------------------------------------------

BAD_ISSUES = [
    ("empty name", {"name": ""}, "name"),
    ("65-character name", {"name": "x" * 65}, "name"),
    ("control character in the name", {"name": "bot\u0007"}, "name"),
    ("name not text", {"name": 5}, "name"),
    ("no name", {"name": None}, "name"),
    ("unknown department", {"department": "purchasing"}, "department"),
    ("department by its name, not its id", {"department": "Engineering"}, "department"),
    ("no department", {"department": None}, "department"),
    ("no scopes", {"scopes": None}, "scopes"),
    ("empty scopes", {"scopes": []}, "scopes"),
    ("scopes not a list", {"scopes": "text"}, "scopes"),
    ("unknown scope", {"scopes": ["text", "text:grok"]}, "scopes"),
    ("admin:users", {"scopes": ["text", "admin:users"]}, "scopes"),
    ("admin:apikeys", {"scopes": ["admin:apikeys"]}, "scopes"),
    ("admin:apikeys:read", {"scopes": ["admin:apikeys:read"]}, "scopes"),
    ("admin:billing:read", {"scopes": ["admin:billing:read"]}, "scopes"),
    ("0 days", {"expires_in_days": 0}, "expires_in_days"),
    ("366 days", {"expires_in_days": 366}, "expires_in_days"),
    ("days as text", {"expires_in_days": "30"}, "expires_in_days"),
    ("fractional days", {"expires_in_days": 1.5}, "expires_in_days"),
    ("unknown field", {"owner": "someone"}, "owner"),
    ("the key itself", {"key": "gwk_0123456789abcdef_" + "a" * 43}, "key"),
]


@pytest.mark.parametrize("case,change,field", BAD_ISSUES, ids=[c[0] for c in BAD_ISSUES])
def test_an_issue_that_breaks_a_rule_is_refused_naming_the_field(state, admin, case, change, field):
    body = {k: v for k, v in {"name": unique_name("e2e-bad"), "department": "sales", "scopes": ["text"],
                              **change}.items() if v is not None}
    before = len(table_items(state))
    fields = error_fields(admin_call(state, "POST", "/apikeys", admin["access_token"], json=body))
    assert field in fields, fields
    assert len(table_items(state)) == before, f"{case}: a key was stored although refused"


def test_every_broken_rule_is_named_at_once(state, admin):
    body = {"name": "", "department": "nowhere", "scopes": ["admin:users", "nope"], "expires_in_days": 400,
            "owner": "x"}
    fields = error_fields(admin_call(state, "POST", "/apikeys", admin["access_token"], json=body))
    assert {"name", "department", "scopes", "expires_in_days", "owner"} <= set(fields), fields
    assert fields.count("scopes") == 2, f"each refused scope is named: {fields}"


def test_a_body_that_is_not_a_json_object_is_refused(state, admin):
    name = unique_name("e2e-bad")
    body = {"name": name, "department": "sales", "scopes": ["text"]}
    token = admin["access_token"]
    expect_error(admin_call(state, "POST", "/apikeys", token, data=json.dumps(body),
                            headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    expect_error(admin_call(state, "POST", "/apikeys", token, data=b"{not json",
                            headers={"Content-Type": "application/json"}), 400, "bad_request")
    expect_error(admin_call(state, "POST", "/apikeys", token, json=[body]), 400, "bad_request")
    assert named(state, token, name) == []


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


def test_the_list_filters_by_department_and_status(state, admin, reader, issued):
    hr = issued(department="hr")["api_key"]
    accounting = issued(department="accounting")["api_key"]
    revoked = revoke(state, admin, issued(department="accounting")["api_key"]["id"])
    ours = {hr["id"], accounting["id"], revoked["id"]}

    def listed(**params) -> set[str]:
        keys = list_keys(state, reader["access_token"], **params)
        for key in keys:
            if "department" in params:
                assert key["department"] == params["department"], (params, key)
            if "status" in params:
                assert key["status"] == params["status"], (params, key)
        return {k["id"] for k in keys} & ours

    assert listed() == ours
    assert listed(department="hr") == {hr["id"]}
    assert listed(department="accounting") == {accounting["id"], revoked["id"]}
    assert listed(status="active") == {hr["id"], accounting["id"]}
    assert listed(status="revoked") == {revoked["id"]}
    assert listed(department="accounting", status="revoked") == {revoked["id"]}
    assert listed(department="hr", status="revoked") == set()
    assert listed(status="expired") == set()


@pytest.mark.parametrize("status", ["ACTIVE", "disabled", ""])
def test_the_list_refuses_a_status_it_does_not_know(state, admin, status):
    expect_error(admin_call(state, "GET", "/apikeys", admin["access_token"], params={"status": status}),
                 400, "bad_request")


def test_the_list_refuses_a_department_it_does_not_know(state, admin):
    expect_error(admin_call(state, "GET", "/apikeys", admin["access_token"], params={"department": "purchasing"}),
                 400, "bad_request")


# Ids that are not a key's id (16 lowercase hex digits) name no key: 404, whatever the operation.
NOT_IDS = ["0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "0123456789abcdeg", "gwk_0123456789abcdef"]


@pytest.mark.parametrize("method,suffix", [("GET", ""), ("POST", "/revoke"), ("POST", "/rotate")])
def test_an_unknown_or_malformed_id_is_not_found(state, admin, method, suffix):
    unknown = new_key_text()[1]
    expect_error(admin_call(state, method, f"/apikeys/{unknown}{suffix}", admin["access_token"]), 404, "not_found")
    for not_an_id in NOT_IDS:
        expect_error(admin_call(state, method, f"/apikeys/{not_an_id}{suffix}", admin["access_token"]),
                     404, "not_found")
    assert not [i for i in table_items(state) if i["key_id"]["S"] == unknown], "a refused call made a record"


def test_a_wrong_method_is_405_and_an_unknown_path_404(state, admin, issued):
    key_id = issued()["api_key"]["id"]
    token = admin["access_token"]
    for method, path in [("PUT", "/apikeys"), ("DELETE", "/apikeys"), ("DELETE", f"/apikeys/{key_id}"),
                         ("PATCH", f"/apikeys/{key_id}"), ("POST", f"/apikeys/{key_id}"),
                         ("GET", f"/apikeys/{key_id}/revoke"), ("GET", f"/apikeys/{key_id}/rotate"),
                         ("DELETE", f"/apikeys/{key_id}/revoke")]:
        expect_error(admin_call(state, method, path, token), 405, "method_not_allowed")
    for method, path in [("POST", f"/apikeys/{key_id}/renew"), ("GET", f"/apikeys/{key_id}/revoke/now"),
                         ("GET", "/apikeys/"), ("GET", "/api-keys")]:
        expect_error(admin_call(state, method, path, token), 404, "not_found")
    assert get_key(state, token, key_id)["status"] == "active", "nothing changed the key"


# --------------------------------------------------------------------------
# Who may administer keys
# --------------------------------------------------------------------------

PROBE_ID = "0123456789abcdef"  # names no key (ids are random; a clash is 2^-64)
ENDPOINTS = [
    ("GET", "/apikeys", None),
    ("POST", "/apikeys", {"name": "probe", "department": "sales", "scopes": ["text"]}),
    ("GET", "/apikeys/{id}", None),
    ("POST", "/apikeys/{id}/revoke", None),
    ("POST", "/apikeys/{id}/rotate", None),
]
ENDPOINT_IDS = [f"{m} {p}" for m, p, _ in ENDPOINTS]


@pytest.fixture(scope="module")
def bystander(issued) -> dict:
    """An active key the refused callers aim at."""
    return issued(name=unique_name("e2e-bystander"))["api_key"]


def refused_call(state, admin, view: dict, method: str, path: str, body: dict | None, **kwargs):
    """The answer to one call that must change nothing: the key `view` stays as it is and no key is stored."""
    before = len(table_items(state))
    resp = admin_call(state, method, path.format(id=view["id"]), json=body, **kwargs)
    assert get_key(state, admin["access_token"], view["id"]) == view, "a refused call changed the key"
    assert len(table_items(state)) == before, "a refused call stored a key"
    return resp


@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_caller_without_a_valid_token_is_401(state, admin, bystander, method, path, body):
    expired = sign_with_moto_key(expired_claims(unverified_claims(admin["access_token"])))
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Bearer {expired}"}):
        resp = refused_call(state, admin, bystander, method, path, body, headers=headers)
        error = expect_error(resp, 401, "unauthorized")
        assert error["message"].startswith(UNAUTHORIZED), error


@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_gateway_user_is_403(state, admin, token_for, bystander, method, path, body):
    resp = refused_call(state, admin, bystander, method, path, body, headers={
        "Authorization": f"Bearer {token_for('gateway-all')}"})
    error = expect_error(resp, 403, "forbidden")
    scope = "admin:apikeys:read" if method == "GET" else "admin:apikeys"
    assert f"'{scope}'" in error["message"], error


@pytest.mark.parametrize("method,path,body", ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_reader_reads_keys_and_cannot_change_them(state, admin, reader, bystander, method, path, body):
    resp = refused_call(state, admin, bystander, method, path, body, headers={
        "Authorization": f"Bearer {reader['access_token']}"})
    if method != "GET":
        error = expect_error(resp, 403, "forbidden")
        assert "'admin:apikeys'" in error["message"], error
    elif path == "/apikeys":
        assert bystander in expect_json(resp, 200, "ApiKeyList")["api_keys"]
    else:
        assert expect_json(resp, 200, "ApiKeyView") == bystander
        expect_error(admin_call(state, "GET", f"/apikeys/{PROBE_ID}", reader["access_token"]), 404, "not_found")


def test_each_admin_resource_asks_for_its_own_scope(state, token_for, bystander):
    """Users and API keys have their own scope pairs: a refusal names the resource's scope."""
    user = token_for("gateway-all")
    for method, path, scope in [("GET", "/apikeys", "admin:apikeys:read"), ("GET", "/users", "admin:users:read"),
                                ("POST", f"/apikeys/{bystander['id']}/revoke", "admin:apikeys"),
                                ("POST", "/users/csv/upload", "admin:users")]:
        error = expect_error(admin_call(state, method, path, user, json={} if method == "POST" else None),
                             403, "forbidden")
        assert f"'{scope}'" in error["message"], (path, error)


def admin_attempts(key: str) -> list[tuple[str, str, dict, dict]]:
    """A key presented to the admin API in each place the gateway reads a credential from."""
    attempts = []
    for method, path, body in [("GET", "/apikeys", None), ("POST", "/apikeys", {"name": "by a key",
                               "department": "sales", "scopes": ["text"]}), ("GET", "/users", None),
                               ("GET", "/system/health", None)]:
        attempts.append((method, path, {"headers": {"Authorization": f"Bearer {key}"}, "json": body}))
        attempts.append((method, path, {"headers": {"api-key": key}, "json": body}))
        attempts.append((method, path, {"headers": {"x-goog-api-key": key}, "json": body}))
        attempts.append((method, path, {"params": {"key": key}, "json": body}))
    return attempts


def test_an_api_key_cannot_call_the_admin_api(state, admin, issued, client_env):
    answer = issued(scopes=["all"])
    call_until_accepted(BY_NAME["azure-openai"].connect("api_key", answer["key"], client_env), unique_prompt("key"))
    for method, path, kwargs in admin_attempts(answer["key"]):
        error = expect_error(admin_call(state, method, path, **kwargs), 403, "forbidden")
        assert "API key" in error["message"], (method, path, error)
    assert named(state, admin["access_token"], "by a key") == []


def test_a_key_whose_record_holds_admin_scopes_still_cannot_call_the_admin_api(state, admin, client_env):
    """The admin API refuses keys as such, not only for lacking the scope (the issue rules never let a key
    hold one: here the record is written past them)."""
    key, key_id = put_record(state, scopes=["text:openai", "admin:apikeys", "admin:users"],
                             expires_at=int(time.time()) + 3600)
    # The key works where its plain scope allows: the authorizer knows it.
    call_until_accepted(BY_NAME["azure-openai"].connect("api_key", key, client_env), unique_prompt("admin key"))
    assert get_key(state, admin["access_token"], key_id)["scopes"] == ["text:openai", "admin:apikeys", "admin:users"]
    for method, path, kwargs in admin_attempts(key):
        error = expect_error(admin_call(state, method, path, **kwargs), 403, "forbidden")
        assert "API key" in error["message"], (method, path, error)
    revoke(state, admin, key_id)


# --------------------------------------------------------------------------
# Using a key
# --------------------------------------------------------------------------


@pytest.mark.parametrize("provider,place", PLACES)
def test_a_key_works_in_every_place_an_sdk_puts_one(state, provider: Adapter, place, issued, client_env, secrets):
    answer = issued(department="accounting", scopes=["text"])
    key = answer["key"]
    session = provider.connect(place, key, client_env)
    helpers.clear_mock(state, provider.mock)
    prompt = unique_prompt("api key")
    reply, took = call_until_accepted(session, prompt)
    assert took <= NEW_KEY_WITHIN_S, f"the new key was accepted {took:.1f} s after its issue"
    assert reply.text == expected_reply(provider, prompt)

    # The provider got the gateway's own credential and nothing of the key.
    path, query = provider.upstream_target(session, "call", provider.model())
    record = helpers.single_request(state, provider.mock, path)
    assert_clean_upstream(provider, record, secrets, key, path, query)

    # The principal is the key.
    request_id = assert_request_id_headers(reply.headers)
    events, raw = helpers.wait_for_events(state, {request_id})
    records = helpers.records_of(events, request_id)
    assert sorted(records) == ["accepted", "authorized", "final"], records
    for found in records.values():
        assert len(found) == 1, found
        event = found[0]
        jsonschema.validate(event, audit_schema())
        assert event["principal"] == key_principal(answer), event
        assert event["credential_source"] == provider.credential_source[place], event
    final = records["final"][0]
    assert (final["decision"], final["status"], final["provider"]) == ("allow", 200, provider.name), final
    assert key not in raw.decode() and key[21:] not in raw.decode(), "the key is in the audit trail"


@pytest.mark.parametrize("provider,place", PLACES)
def test_a_key_holds_only_its_scopes(state, provider: Adapter, place, issued, client_env):
    """A key with the text:openai scope calls Azure OpenAI and nothing else: 403 in each other provider's
    shape, raised as its SDK's exception, naming the scope; nothing reaches those providers."""
    answer = issued(scopes=["text:openai"])
    key = answer["key"]
    call_until_accepted(BY_NAME["azure-openai"].connect("api_key", key, client_env), unique_prompt("openai key"))
    helpers.clear_mock(state, provider.mock)
    session = provider.connect(place, key, client_env)
    prompt = unique_prompt("scoped key")
    if provider.scope == "text:openai":
        assert session.call(prompt).text == expected_reply(provider, prompt)
        assert len(helpers.mock_requests(state, provider.mock)) == 1
        return
    error = expect_sdk_error(session, 403, lambda: session.call(prompt))
    assert_gateway_error(provider, error, 403)
    assert provider.scope in error.message, error.message
    assert helpers.mock_requests(state, provider.mock) == [], "a refused request reached the provider"


def altered(key: str) -> str:
    """The key with one character of its secret changed (still well-formed)."""
    i = 30
    return key[:i] + ("B" if key[i] != "B" else "C") + key[i + 1:]


BAD_KEYS = {
    # Malformed: no key's grammar.
    "truncated": lambda key: key[:-1],
    "one character more": lambda key: key + "A",
    "upper-case id": lambda key: "gwk_" + key[4:20].upper() + key[20:],
    "character outside base64url": lambda key: key[:-1] + "+",
    "prefix only": lambda key: "gwk_",
    # Well-formed, not issued.
    "unknown": lambda key: new_key_text()[0],
    # An issued key's id with another secret, and one character of its secret changed.
    "another secret": lambda key: key[:21] + new_key_text()[0][21:],
    "one secret character changed": altered,
}


@pytest.fixture(scope="module")
def live_key(issued) -> str:
    """An active key with the text scopes, shown to work (in each test) before its altered versions are tried."""
    return issued(scopes=["text"])["key"]


@pytest.mark.parametrize("kind", list(BAD_KEYS))
@pytest.mark.parametrize("provider,place", PLACES)
def test_a_bad_key_is_refused_at_once(provider: Adapter, place, kind, live_key, client_env, state):
    # The real key works (so the refusal is about the change, not the key).
    call_until_accepted(provider.connect(place, live_key, client_env), unique_prompt("live key"))
    bad = BAD_KEYS[kind](live_key)
    assert bad != live_key
    for name in (helpers.AZURE, helpers.BEDROCK, helpers.GEMINI):
        helpers.clear_mock(state, name)
    assert_refused(provider, provider.connect(place, bad, client_env))
    for name in (helpers.AZURE, helpers.BEDROCK, helpers.GEMINI):
        assert helpers.mock_requests(state, name) == [], f"a refused key reached the {name} mock"


@pytest.mark.parametrize("provider,place", DEFAULT_PLACES)
def test_a_revoked_key_is_refused_within_the_revocation_bound(state, provider: Adapter, place, admin, issued,
                                                              client_env):
    answer = issued()
    key, key_id = answer["key"], answer["api_key"]["id"]
    session = provider.connect(place, key, client_env)
    call_until_accepted(session, unique_prompt("before revocation"))

    revoked = revoke(state, admin, key_id)
    assert revoked["status"] == "revoked" and revoked["revoked_by"] == admin["username"], revoked
    bound = staleness_bound(state)
    error, took = call_until_refused(session, bound)
    request_id = assert_unauthorized(provider, error)
    for _ in range(3):
        assert_refused(provider, session)

    events, raw = helpers.wait_for_events(state, {request_id})
    refused = helpers.records_of(events, request_id)
    assert sorted(refused) == ["final"], refused
    event = refused["final"][0]
    jsonschema.validate(event, audit_schema())
    assert (event["decision"], event["status"]) == ("unauthorized", 401), event
    assert event["principal"]["subject"] == f"apikey:{key_id}", event
    assert event["principal"]["auth_method"] == "api-key", event
    assert key not in raw.decode()
    # A refused request is no use of the key: its last use is from before the refusals (the writer has
    # handled the refused request's record by now).
    last_used = get_key(state, admin["access_token"], key_id)["last_used_at"]
    assert last_used is not None and parse_rfc3339(last_used) <= parse_rfc3339(event["time"]), (last_used, event)


def test_revoking_again_keeps_the_first_revocation(state, admin, issued):
    key_id = issued()["api_key"]["id"]
    first = revoke(state, admin, key_id)
    again = revoke(state, admin, key_id)  # revoked_at has milliseconds: a second stamp would differ
    assert again == first, (first, again)
    assert get_key(state, admin["access_token"], key_id) == first


def test_an_expired_key_is_refused_and_listed_as_expired(state, admin, client_env):
    key, key_id = put_record(state, scopes=["text"], expires_at=int(time.time()) - 60)
    view = get_key(state, admin["access_token"], key_id)
    assert view["status"] == "expired", view
    assert key_id in {k["id"] for k in list_keys(state, admin["access_token"], status="expired")}
    # Refused from the first call: the authorizer polls for a key it does not know, and then knows it expired.
    provider = BY_NAME["gemini"]
    deadline = time.monotonic() + NEW_KEY_WITHIN_S
    while True:
        assert_refused(provider, provider.connect("api_key", key, client_env))
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    expect_error(admin_call(state, "POST", f"/apikeys/{key_id}/rotate", admin["access_token"]), 409, "conflict")


# --------------------------------------------------------------------------
# Rotation
# --------------------------------------------------------------------------


def test_a_rotation_issues_a_successor_and_the_old_key_works_for_the_grace(state, admin, issued, client_env):
    old = issued(department="hr", scopes=["text:openai", "text:gemini"])
    azure = BY_NAME["azure-openai"]
    old_session = azure.connect("api_key", old["key"], client_env)
    call_until_accepted(old_session, unique_prompt("old key"))

    before = time.time()
    new = rotate(state, admin, old["api_key"]["id"])  # no body: the default grace
    after = time.time()
    successor = new["api_key"]
    assert API_KEY_RE.match(new["key"]) and new["key"] != old["key"] and successor["id"] != old["api_key"]["id"]
    assert successor["id"] == new["key"][4:20]
    assert (successor["name"], successor["department"], successor["scopes"]) == (
        old["api_key"]["name"], "hr", ["text:openai", "text:gemini"]), successor
    assert (successor["status"], successor["rotated_from"], successor["replaced_by"], successor["created_by"]) == (
        "active", old["api_key"]["id"], None, admin["username"]), successor

    replaced = get_key(state, admin["access_token"], old["api_key"]["id"])
    assert (replaced["status"], replaced["replaced_by"], replaced["revoked_at"]) == ("active", successor["id"], None)
    grace_end = parse_rfc3339(replaced["expires_at"])
    assert before + DEFAULT_GRACE_S - 2 <= grace_end <= after + DEFAULT_GRACE_S + 2, "a day's grace by default"
    assert get_key(state, admin["access_token"], successor["id"]) == successor

    # Both keys work: the old one throughout (it is not refused in the cache bound), the new one at once.
    call_until_accepted(azure.connect("azure_ad_token", new["key"], client_env), unique_prompt("new key"))
    deadline = time.monotonic() + staleness_bound(state)
    while time.monotonic() < deadline:
        prompt = unique_prompt("old key in its grace")
        assert old_session.call(prompt).text == expected_reply(azure, prompt)
        time.sleep(0.5)


@pytest.mark.parametrize("days,grace,ends", [
    (90, 3600, "grace"),  # now + grace comes first
    (1, 7 * 86400, "expiry"),  # the key expires before the grace would end: its expiry stays
])
def test_the_grace_never_outlasts_the_old_keys_expiry(state, admin, issued, days, grace, ends):
    old = issued(expires_in_days=days)["api_key"]
    before = time.time()
    successor = rotate(state, admin, old["id"], json={"grace_seconds": grace})["api_key"]
    after = time.time()
    replaced = get_key(state, admin["access_token"], old["id"])
    assert replaced["replaced_by"] == successor["id"] and replaced["status"] == "active", replaced
    expiry = parse_rfc3339(replaced["expires_at"])
    if ends == "grace":
        assert before + grace - 2 <= expiry <= after + grace + 2, replaced
    else:
        assert replaced["expires_at"] == old["expires_at"], (old, replaced)


def test_a_rotation_without_grace_refuses_the_old_key(state, admin, issued, client_env):
    old = issued()
    gemini = BY_NAME["gemini"]
    old_session = gemini.connect("key_query", old["key"], client_env)
    call_until_accepted(old_session, unique_prompt("old key"))
    new = rotate(state, admin, old["api_key"]["id"], json={"grace_seconds": 0})

    replaced = get_key(state, admin["access_token"], old["api_key"]["id"])
    assert (replaced["status"], replaced["replaced_by"]) == ("expired", new["api_key"]["id"]), replaced
    assert parse_rfc3339(replaced["expires_at"]) <= time.time(), replaced
    assert old["api_key"]["id"] in {k["id"] for k in list_keys(state, admin["access_token"], status="expired")}

    error, _ = call_until_refused(old_session, staleness_bound(state))
    assert_unauthorized(gemini, error)
    prompt = unique_prompt("successor")
    reply, _ = call_until_accepted(gemini.connect("api_key", new["key"], client_env), prompt)
    assert reply.text == expected_reply(gemini, prompt)
    assert_refused(gemini, old_session)


@pytest.mark.parametrize("state_of", ["revoked", "rotated", "expired by a rotation"])
def test_only_an_active_key_that_was_not_rotated_can_be_rotated(state, admin, issued, state_of):
    key_id = issued()["api_key"]["id"]
    if state_of == "revoked":
        revoke(state, admin, key_id)
    else:
        grace = 0 if state_of.startswith("expired") else 3600
        rotate(state, admin, key_id, json={"grace_seconds": grace})
    before = get_key(state, admin["access_token"], key_id)
    keys_before = len(named(state, admin["access_token"], before["name"]))
    for body in (None, {"grace_seconds": 60}):
        error = expect_error(admin_call(state, "POST", f"/apikeys/{key_id}/rotate", admin["access_token"], json=body),
                             409, "conflict")
        assert key_id in error["message"], error
    assert get_key(state, admin["access_token"], key_id) == before, "a refused rotation changed the key"
    assert len(named(state, admin["access_token"], before["name"])) == keys_before, "a refused rotation issued a key"


def test_of_rotations_at_once_one_wins_and_no_second_key_lives(state, admin, issued):
    """Concurrent rotations of one key: one successor, the others refused as the key is rotated already."""
    import threading

    old = issued()["api_key"]
    answers, start = [], threading.Barrier(4)

    def attempt():
        start.wait()
        answers.append(admin_call(state, "POST", f"/apikeys/{old['id']}/rotate", admin["access_token"],
                                  json={"grace_seconds": 60}))

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409], [(a.status_code, a.text) for a in answers]
    winner = next(expect_json(a, 201, "IssuedApiKey") for a in answers if a.status_code == 201)["api_key"]
    for answer in answers:
        if answer.status_code == 409:
            expect_error(answer, 409, "conflict")
    assert get_key(state, admin["access_token"], old["id"])["replaced_by"] == winner["id"]
    successors = [k for k in list_keys(state, admin["access_token"]) if k["rotated_from"] == old["id"]]
    assert [k["id"] for k in successors if k["status"] == "active"] == [winner["id"]], successors


@pytest.mark.parametrize("body,field", [
    ({"grace_seconds": -1}, "grace_seconds"),
    ({"grace_seconds": 604801}, "grace_seconds"),
    ({"grace_seconds": "60"}, "grace_seconds"),
    ({"grace_seconds": None}, "grace_seconds"),
    ({"grace_seconds": 1.5}, "grace_seconds"),
    ({"grace": 60}, "grace"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v))
def test_a_rotation_that_breaks_a_rule_changes_nothing(state, admin, issued, body, field):
    view = issued()["api_key"]
    fields = error_fields(admin_call(state, "POST", f"/apikeys/{view['id']}/rotate", admin["access_token"], json=body))
    assert field in fields, fields
    assert get_key(state, admin["access_token"], view["id"]) == view
    assert len(named(state, admin["access_token"], view["name"])) == 1, "a refused rotation issued a key"


def test_a_grace_of_a_week_is_the_most(state, admin, issued):
    old = issued(expires_in_days=30)["api_key"]
    before = time.time()
    rotate(state, admin, old["id"], json={"grace_seconds": 604800})
    expiry = parse_rfc3339(get_key(state, admin["access_token"], old["id"])["expires_at"])
    assert before + 604800 - 2 <= expiry <= time.time() + 604800 + 2


# --------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audited(state, admin, issued) -> dict:
    """A key issued, rotated (to a successor) and the successor revoked; the audit trail once all four
    admin events are in it."""
    first = issued(department="engineering", scopes=["text:claude"])
    second = rotate(state, admin, first["api_key"]["id"], json={"grace_seconds": 60})
    revoke(state, admin, second["api_key"]["id"])
    one, two = first["api_key"]["id"], second["api_key"]["id"]
    events, raw = wait_for_audit(state, lambda evs: admin_events(evs, "apikeys.issue", one)
                                 and admin_events(evs, "apikeys.rotate", one)
                                 and admin_events(evs, "apikeys.issue", two)
                                 and admin_events(evs, "apikeys.revoke", two))
    return {"first": first, "second": second, "events": events, "raw": raw}


KEY_FIELDS = ["name", "department", "scopes", "expires_at"]


@pytest.mark.parametrize("action,which,status,changed,source", [
    ("apikeys.issue", "first", 201, KEY_FIELDS, None),
    ("apikeys.rotate", "first", 201, None, None),
    ("apikeys.issue", "second", 201, KEY_FIELDS, "rotation of {first}"),
    ("apikeys.revoke", "second", 200, None, None),
])
def test_each_change_is_one_admin_event_by_the_administrator(audited, admin, action, which, status, changed, source):
    target = audited[which]["api_key"]["id"]
    found = admin_events(audited["events"], action, target)
    assert len(found) == 1, found
    event = found[0]
    assert event["schema_version"] >= 3 and event["provider"] == "admin", event
    assert (event["record"], event["decision"], event["outcome"], event["status"], event["operation"]) == (
        "final", "allow", "complete", status, action), event
    assert event["principal"]["subject"] == admin["sub"], event
    assert event["principal"]["auth_method"] != "api-key", event
    assert event["admin"]["actor"] == "admin-api", event
    assert event["admin"]["source"] == (source and source.format(first=audited["first"]["api_key"]["id"])), event
    if changed is not None:
        assert event["admin"]["changed"] == changed, event
    assert all(isinstance(name, str) for name in event["admin"]["changed"]), event


def test_the_rotation_and_its_successor_share_a_request(audited):
    one, two = audited["first"]["api_key"]["id"], audited["second"]["api_key"]["id"]
    rotation = admin_events(audited["events"], "apikeys.rotate", one)[0]
    successor = admin_events(audited["events"], "apikeys.issue", two)[0]
    assert rotation["request_id"] == successor["request_id"], (rotation, successor)


def test_no_admin_event_holds_a_key_or_its_hash(audited):
    raw = audited["raw"].decode("utf-8", errors="replace")
    for answer in (audited["first"], audited["second"]):
        key = answer["key"]
        for secret in (key, key[21:], hashlib.sha256(key.encode()).hexdigest()):
            assert secret not in raw, f"{secret[:12]}... is in the audit trail"


def test_the_admin_events_conform_to_the_audit_schema(audited):
    one, two = audited["first"]["api_key"]["id"], audited["second"]["api_key"]["id"]
    events = (admin_events(audited["events"], "apikeys.issue", one) + admin_events(audited["events"], "apikeys.rotate",
              one) + admin_events(audited["events"], "apikeys.issue", two)
              + admin_events(audited["events"], "apikeys.revoke", two))
    assert len(events) == 4
    for event in events:
        jsonschema.validate(event, audit_schema())


def test_a_keys_use_sets_its_last_use(state, admin, issued, client_env):
    answer = issued()
    key_id = answer["api_key"]["id"]
    assert get_key(state, admin["access_token"], key_id)["last_used_at"] is None
    reply, _ = call_until_accepted(BY_NAME["gemini"].connect("api_key", answer["key"], client_env),
                                   unique_prompt("last use"))
    request_id = assert_request_id_headers(reply.headers)
    deadline = time.monotonic() + LAST_USED_WITHIN_S
    while (view := get_key(state, admin["access_token"], key_id))["last_used_at"] is None:
        assert time.monotonic() < deadline, f"last_used_at still null {LAST_USED_WITHIN_S:.0f} s after the use"
        time.sleep(0.5)
    # The time the authorizer let the request through: its `authorized` record's.
    events, _ = helpers.wait_for_events(state, {request_id})
    authorized = helpers.records_of(events, request_id)["authorized"][0]
    assert parse_rfc3339(view["last_used_at"]) == pytest.approx(parse_rfc3339(authorized["time"]), abs=0.002), (
        view, authorized)
    assert view["status"] == "active" and view == {**answer["api_key"], "last_used_at": view["last_used_at"]}
