"""The admin API through the local stack, as an administrator uses it (contract: the identity notes, "Admin
API" and "Audit"; document: schemas/admin-api.openapi.yaml, whose component schemas every answer here is
checked against).

- Who: an administrator (`gateway-admins`), a read-only administrator (`gateway-admin-readers`) and a
  user of the gateway (`gateway-all`): every operation refuses a caller without a token (401) or without
  the scope (403) in the admin error shape; the reader reads and cannot write.
- Users: create, get, search and page, update (null clears, an e-mail change needs verification, dates
  and status decide `enabled`), disable, enable, password reset, sign-out, delete; every rule of the HR
  file refuses a bad value with the field named.
- Revocation: a token that works stops working, within the authorizer's revocation cache bound, once its
  user is signed out, disabled, reset or deleted, though it has not expired.
- Provisioning: an upload URL takes an age-encrypted HR file that the provisioner applies (or plans, for
  a dry run), visible in the sync status; the CSV download is Appendix 2 in UTF-8 with a BOM or CP932,
  formula-safe.
- Audit: every change is one final event of provider "admin" naming the action, the target and the acting
  administrator, with no e-mail address or password in it.

Transport-independent: the admin API is not a provider route, so it runs the same in both passes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time

import jsonschema
import pytest
import requests

from helpers import (
    ADMIN_GROUP,
    ADMIN_READER_GROUP,
    APPENDIX_2_HEADER,
    HTTP_TIMEOUT,
    STRONG_PASSWORD,
    add_to_groups,
    admin_call,
    admin_events,
    admin_schema_errors,
    audit_schema,
    aws_client,
    cognito_user,
    confirm_cognito_user,
    delete_cognito_user,
    expired_claims,
    parse_rfc3339,
    provisioning_encrypt,
    sign_in,
    sign_with_moto_key,
    unique_digits,
    unverified_claims,
    wait_for_audit,
    wait_for_provisioning_report,
)

# This run's tag: every user this module creates has a user_id `at<RUN><suffix>`.
RUN = unique_digits(9)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# A margin over the authorizer's revocation cache bound: the time a request takes through the stack.
REVOCATION_MARGIN_S = 5
REPORT_WITHIN = 30


def uid(suffix: str) -> str:
    return f"at{RUN}{suffix}"


# --------------------------------------------------------------------------
# Callers and the users this module makes
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(make_user) -> dict:
    return make_user(ADMIN_GROUP)


@pytest.fixture(scope="module")
def reader(make_user) -> dict:
    return make_user(ADMIN_READER_GROUP)


@pytest.fixture(scope="module")
def normal(make_user) -> dict:
    return make_user("gateway-all", "dept-engineering")


@pytest.fixture(scope="module")
def directory(state):
    """User ids this module creates (or tries to): removed from the pool at the end, whatever the API did."""
    made: list[str] = []
    yield made
    for user_id in made:
        delete_cognito_user(state, user_id)


def new_user(suffix: str, **fields) -> dict:
    """A valid create body for user `at<RUN><suffix>`; a field given as None is left out."""
    user_id = uid(suffix)
    body = {
        "user_id": user_id,
        "name": f"Admin Test {suffix}",
        "email": f"{user_id}@example.com",
        "department": "sales",
        "start_date": "2024/4/1",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def expect_json(resp: requests.Response, status: int, schema: str | None = None):
    """The response's JSON body, after checking status, media type and (when named) its component schema."""
    assert resp.status_code == status, (resp.request.method, resp.url, resp.status_code, resp.text[:800])
    media_type = resp.headers.get("content-type", "").split(";")[0].strip().lower()
    assert media_type == "application/json", (resp.url, resp.headers.get("content-type"))
    body = resp.json()
    if schema is not None:
        errors = admin_schema_errors(schema, body)
        assert not errors, (schema, errors, body)
    return body


def expect_error(resp: requests.Response, status: int, code: str) -> dict:
    """The admin error shape with the code of its status."""
    body = expect_json(resp, status, "Error")
    assert body["error"]["code"] == code, body
    return body["error"]


def error_fields(resp: requests.Response) -> set[str]:
    error = expect_error(resp, 400, "bad_request")
    assert error.get("details"), f"a 400 for a broken rule names the field in details: {error}"
    return {d["field"] for d in error["details"]}


def create(state, admin, directory, body: dict) -> dict:
    directory.append(body["user_id"])
    resp = admin_call(state, "POST", "/users", admin["access_token"], json=body)
    user = expect_json(resp, 201, "User")
    assert resp.headers.get("location") == f"/admin/users/{body['user_id']}", resp.headers
    return user


def get_user(state, token: str, user_id: str) -> dict:
    return expect_json(admin_call(state, "GET", f"/users/{user_id}", token), 200, "User")


def assert_not_created(state, admin, user_id: str) -> None:
    expect_error(admin_call(state, "GET", f"/users/{user_id}", admin["access_token"]), 404, "not_found")
    assert cognito_user(state, user_id) is None, f"{user_id} was created although refused"


# --------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------


def test_health_answers_ok_to_administrators_and_readers(state, admin, reader):
    for caller in (admin, reader):
        body = expect_json(admin_call(state, "GET", "/system/health", caller["access_token"]), 200, "Health")
        assert body["status"] == "ok" and body["checks"] == {"directory": "ok", "revocations": "ok", "api_keys": "ok"}, body
        assert abs(parse_rfc3339(body["time"]) - time.time()) < 300, body


# --------------------------------------------------------------------------
# Who may call what
# --------------------------------------------------------------------------

MISSING = f"nx{RUN}"  # a user that does not exist
ENDPOINTS = [
    ("GET", "/system/health", None),
    ("GET", "/users", None),
    ("POST", "/users", "create"),
    ("GET", f"/users/{MISSING}", None),
    ("PATCH", f"/users/{MISSING}", {"name": "Nobody"}),
    ("DELETE", f"/users/{MISSING}", None),
    ("PUT", f"/users/{MISSING}/disable", None),
    ("PUT", f"/users/{MISSING}/enable", None),
    ("POST", f"/users/{MISSING}/password-reset", None),
    ("POST", f"/users/{MISSING}/sign-out", None),
    ("POST", "/users/csv/upload", {"filename": "hr.csv.age"}),
    ("GET", "/users/csv/download", None),
    ("GET", "/users/sync/status", None),
]
ENDPOINT_IDS = [f"{m} {p.replace(MISSING, '{id}')}" for m, p, _ in ENDPOINTS]


def body_for(spec, suffix: str, directory: list[str]):
    if spec == "create":
        directory.append(uid(suffix))
        return new_user(suffix)
    return spec


@pytest.mark.parametrize("method,path,spec", ENDPOINTS, ids=ENDPOINT_IDS)
def test_every_operation_refuses_a_caller_without_a_valid_token(state, admin, directory, method, path, spec):
    body = body_for(spec, "anon", directory)
    expect_error(admin_call(state, method, path, json=body), 401, "unauthorized")
    expect_error(admin_call(state, method, path, headers={"Authorization": "Bearer not-a-token"}, json=body),
                 401, "unauthorized")
    expired = sign_with_moto_key(expired_claims(unverified_claims(admin["access_token"])))
    expect_error(admin_call(state, method, path, expired, json=body), 401, "unauthorized")


@pytest.mark.parametrize("method,path,spec", ENDPOINTS, ids=ENDPOINT_IDS)
def test_every_operation_refuses_a_gateway_user_without_an_admin_scope(state, normal, directory, method, path, spec):
    body = body_for(spec, "usr", directory)
    expect_error(admin_call(state, method, path, normal["access_token"], json=body), 403, "forbidden")
    if spec == "create":
        assert cognito_user(state, uid("usr")) is None


@pytest.mark.parametrize("method,path,spec", ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_reader_reads_and_cannot_write(state, reader, directory, method, path, spec):
    body = body_for(spec, "rdr", directory)
    resp = admin_call(state, method, path, reader["access_token"], json=body)
    if method != "GET":
        expect_error(resp, 403, "forbidden")
        if spec == "create":
            assert cognito_user(state, uid("rdr")) is None
    elif MISSING in path:
        expect_error(resp, 404, "not_found")
    else:
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:500])


# --------------------------------------------------------------------------
# A user's life
# --------------------------------------------------------------------------


def test_a_user_from_creation_to_deletion(state, admin, reader, directory):
    token = admin["access_token"]
    body = new_user("lc", name="管理 試験", job_title="主任", phone="03-1234-5678", start_date="2024/4/1",
                    end_date="2099/12/31", alias_id=f"lc.{RUN}")
    user_id = body["user_id"]
    created = create(state, admin, directory, body)
    assert {k: created[k] for k in ("user_id", "name", "email", "department", "job_title", "phone", "alias_id")} == {
        "user_id": user_id, "name": "管理 試験", "email": body["email"], "department": "sales",
        "job_title": "主任", "phone": "03-1234-5678", "alias_id": f"lc.{RUN}"}, created
    assert (created["start_date"], created["end_date"]) == ("2024-04-01", "2099-12-31"), "dates are answered ISO"
    assert created["hr_status"] == "active" and created["enabled"] is True, created
    assert created["email_verified"] is True, "created as the provisioner does: the address is the HR file's"
    assert created["status"] == "FORCE_CHANGE_PASSWORD", "enabled now: invited with a temporary password"
    assert parse_rfc3339(created["created_at"]) <= parse_rfc3339(created["updated_at"]) + 1, created
    # In the directory as the provisioner would have made it.
    pooled = cognito_user(state, user_id)
    assert pooled is not None and pooled["enabled"] is True, pooled
    assert pooled["groups"] == ["dept-sales"], pooled
    assert pooled["attributes"]["sub"] == created["sub"], (pooled, created)
    assert pooled["attributes"]["custom:user_id"] == user_id
    assert pooled["attributes"]["custom:start_date"] == "2024-04-01"
    assert pooled["attributes"]["custom:status"] == "active"

    assert get_user(state, token, user_id) == created
    assert get_user(state, reader["access_token"], user_id) == created

    change = {"name": "管理 試験二", "job_title": None, "alias_id": None}
    patched = expect_json(admin_call(state, "PATCH", f"/users/{user_id}", token, json=change), 200, "User")
    assert (patched["name"], patched["job_title"], patched["alias_id"]) == ("管理 試験二", None, None), patched
    unchanged = ("user_id", "sub", "email", "email_verified", "department", "phone", "start_date", "end_date",
                 "hr_status", "enabled", "status", "created_at")
    assert {k: patched[k] for k in unchanged} == {k: created[k] for k in unchanged}, (created, patched)
    assert parse_rfc3339(patched["updated_at"]) >= parse_rfc3339(created["updated_at"])
    patched = expect_json(admin_call(state, "PATCH", f"/users/{user_id}", token,
                                     json={"phone": None, "end_date": None}), 200, "User")
    assert (patched["phone"], patched["end_date"], patched["enabled"]) == (None, None, True), patched
    assert get_user(state, token, user_id) == patched
    attributes = cognito_user(state, user_id)["attributes"]
    for cleared in ("custom:job_title", "custom:phone", "custom:end_date", "custom:alias_id"):
        assert attributes.get(cleared, "") == "", (cleared, attributes)

    # The user's first sign-in sets a permanent password.
    confirm_cognito_user(state, user_id)
    assert get_user(state, token, user_id)["status"] == "CONFIRMED"

    disabled = expect_json(admin_call(state, "PUT", f"/users/{user_id}/disable", token), 200, "User")
    assert disabled["enabled"] is False and cognito_user(state, user_id)["enabled"] is False, disabled
    assert get_user(state, token, user_id)["enabled"] is False
    enabled = expect_json(admin_call(state, "PUT", f"/users/{user_id}/enable", token), 200, "User")
    assert enabled["enabled"] is True and cognito_user(state, user_id)["enabled"] is True, enabled

    reset = expect_json(admin_call(state, "POST", f"/users/{user_id}/password-reset", token), 200, "User")
    assert reset["status"] == "RESET_REQUIRED", reset
    assert cognito_user(state, user_id)["status"] == "RESET_REQUIRED"

    before = time.time()
    signed_out = expect_json(admin_call(state, "POST", f"/users/{user_id}/sign-out", token), 200, "SignOutResult")
    assert signed_out["user_id"] == user_id, signed_out
    assert before - 60 < parse_rfc3339(signed_out["revoked_before"]) < time.time() + 60, signed_out

    deleted = admin_call(state, "DELETE", f"/users/{user_id}", token)
    assert deleted.status_code == 204 and deleted.content == b"", (deleted.status_code, deleted.text[:300])
    assert cognito_user(state, user_id) is None
    expect_error(admin_call(state, "GET", f"/users/{user_id}", token), 404, "not_found")
    for method, path in [("DELETE", ""), ("PUT", "/disable"), ("PUT", "/enable"), ("POST", "/password-reset"),
                         ("POST", "/sign-out")]:
        expect_error(admin_call(state, method, f"/users/{user_id}{path}", token), 404, "not_found")
    expect_error(admin_call(state, "PATCH", f"/users/{user_id}", token, json={"name": "Gone"}), 404, "not_found")


def test_an_email_change_needs_verification(state, admin, directory):
    token = admin["access_token"]
    user_id = create(state, admin, directory, new_user("em"))["user_id"]
    confirm_cognito_user(state, user_id)
    before = get_user(state, token, user_id)
    assert (before["status"], before["email_verified"]) == ("CONFIRMED", True), before
    new_email = f"{user_id}.new@example.com"
    after = expect_json(admin_call(state, "PATCH", f"/users/{user_id}", token, json={"email": new_email}),
                        200, "User")
    assert (after["email"], after["email_verified"], after["status"]) == (
        new_email, False, "EMAIL_VERIFY_REQUIRED"), after
    assert get_user(state, token, user_id) == after
    attributes = cognito_user(state, user_id)["attributes"]
    assert (attributes["email"], attributes.get("email_verified")) == (new_email, "false"), attributes


def test_dates_and_hr_status_decide_whether_the_account_is_enabled(state, admin, directory):
    token = admin["access_token"]
    future = create(state, admin, directory, new_user("fs", start_date="2099/1/1"))
    assert (future["enabled"], future["hr_status"], future["start_date"]) == (False, "active", "2099-01-01"), \
        "a future starter is created disabled until the start date"
    assert cognito_user(state, future["user_id"])["enabled"] is False
    path = f"/users/{future['user_id']}"
    for change, enabled, hr_status in [
        ({"start_date": "2024-04-01"}, True, "active"),
        ({"status": "inactive"}, False, "inactive"),
        ({"status": "active"}, True, "active"),
        ({"end_date": "2024/12/31"}, False, "active"),
        ({"end_date": None}, True, "active"),
    ]:
        user = expect_json(admin_call(state, "PATCH", path, token, json=change), 200, "User")
        assert (user["enabled"], user["hr_status"]) == (enabled, hr_status), (change, user)
        assert cognito_user(state, future["user_id"])["enabled"] is enabled, change
    inactive = create(state, admin, directory, new_user("in", status="inactive"))
    assert (inactive["enabled"], inactive["hr_status"]) == (False, "inactive"), inactive


# --------------------------------------------------------------------------
# Search and pages
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed(state, admin, directory) -> list[dict]:
    """Three users whose names carry this run's word `Listy<RUN>` (not in their user_ids)."""
    return [
        create(state, admin, directory, new_user("l1", name=f"Listy{RUN} Alpha", alias_id=f"alias.{RUN}")),
        create(state, admin, directory, new_user("l2", name=f"Listy{RUN} Beta", department="engineering")),
        create(state, admin, directory, new_user("l3", name=f"Listy{RUN} Gamma", status="inactive")),
    ]


def list_users(state, token: str, **params) -> dict:
    return expect_json(admin_call(state, "GET", "/users", token, params=params), 200, "UserList")


def all_pages(state, token: str, **params) -> list[dict]:
    users, cursors, pages = [], set(), 0
    while True:
        page = list_users(state, token, **params)
        assert len(page["users"]) <= int(params.get("limit", 50)), page
        users.extend(page["users"])
        pages += 1
        assert pages < 500, "the pages never end"
        cursor = page["next_cursor"]
        if cursor is None:
            return users
        assert page["users"], "a page with a next page holds users"
        assert cursor not in cursors, f"cursor {cursor!r} came twice"
        cursors.add(cursor)
        params = {**params, "cursor": cursor}


def ids(users: list[dict]) -> list[str]:
    return [u["user_id"] for u in users]


def test_search_filters_by_department_name_enabled_and_status(state, admin, reader, listed):
    token = admin["access_token"]
    l1, l2, l3 = (u["user_id"] for u in listed)
    word = f"Listy{RUN}"
    assert ids(list_users(state, token, name=word)["users"]) == [l1, l2, l3]
    assert ids(list_users(state, token, name=word.upper())["users"]) == [l1, l2, l3], "matched case-insensitively"
    assert ids(list_users(state, token, name=word.lower(), department="sales")["users"]) == [l1, l3]
    assert ids(list_users(state, token, name=word, department="engineering")["users"]) == [l2]
    assert ids(list_users(state, token, name=word, enabled="false")["users"]) == [l3]
    assert ids(list_users(state, token, name=word, enabled="true")["users"]) == [l1, l2]
    assert ids(list_users(state, token, name=l2.upper())["users"]) == [l2], "the name filter matches the user_id"
    assert ids(list_users(state, token, name=f"ALIAS.{RUN}")["users"]) == [l1], "and the alias_id"
    status = get_user(state, token, l1)["status"]
    by_status = list_users(state, token, name=word, status=status)["users"]
    assert l1 in ids(by_status) and all(u["status"] == status for u in by_status), by_status
    assert list_users(state, token, name=f"nobody{RUN}") == {"users": [], "next_cursor": None}
    assert ids(list_users(state, reader["access_token"], name=word)["users"]) == [l1, l2, l3]
    # Every filter narrows the same way over the whole directory.
    for user in list_users(state, token, department="engineering", limit=100)["users"]:
        assert user["department"] == "engineering", user
    for user in list_users(state, token, enabled="false", limit=100)["users"]:
        assert user["enabled"] is False, user


def test_pages_of_one_walk_every_match_once_in_user_id_order(state, admin, listed):
    token = admin["access_token"]
    pages, seen, params = 0, [], {"name": f"Listy{RUN}", "limit": 1}
    while True:
        page = list_users(state, token, **params)
        pages += 1
        assert len(page["users"]) <= 1, page
        seen.extend(ids(page["users"]))
        if page["next_cursor"] is None:
            break
        assert pages <= 4, "more pages than matching users"
        params["cursor"] = page["next_cursor"]
    assert seen == [u["user_id"] for u in listed], seen


def test_the_whole_directory_pages_the_same_at_any_page_size(state, admin, listed):
    token = admin["access_token"]
    big = all_pages(state, token, limit=100)
    small = all_pages(state, token, limit=7)
    assert ids(big) == ids(small)
    assert len(set(ids(big))) == len(big), "no user twice"
    assert ids(big) == sorted(ids(big)), "ordered by user_id"
    assert {u["user_id"] for u in listed} <= set(ids(big))
    default = list_users(state, token)
    assert len(default["users"]) == min(50, len(big)), "50 a page by default"


@pytest.mark.parametrize("params", [
    {"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"status": "ASLEEP"}, {"enabled": "maybe"},
    {"department": "purchasing"}, {"cursor": "not-a-cursor"},
], ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
def test_search_refuses_values_it_does_not_know(state, admin, params):
    expect_error(admin_call(state, "GET", "/users", admin["access_token"], params=params), 400, "bad_request")


# --------------------------------------------------------------------------
# The HR file's rules, through the API
# --------------------------------------------------------------------------

TOO_LONG_ID = (f"at{RUN}" + "x" * 40)[:33]
BAD_CREATES = [
    ("formula name", {"name": "=cmd|' /C calc'!A0"}, "name"),
    ("plus name", {"name": "+1"}, "name"),
    ("minus name", {"name": "-1"}, "name"),
    ("at name", {"name": "@SUM(A1)"}, "name"),
    ("tab name", {"name": "\tx"}, "name"),
    ("control character", {"name": "a\u0007b"}, "name"),
    ("formula job_title", {"job_title": "=1+1"}, "job_title"),
    ("formula phone", {"phone": "=1+1"}, "phone"),
    ("33 characters", {"user_id": TOO_LONG_ID}, "user_id"),
    ("space in user_id", {"user_id": f"at{RUN} sp"}, "user_id"),
    ("not an address", {"email": "not-an-address"}, "email"),
    ("65-character address", {"email": "a" * 53 + "@example.com"}, "email"),
    ("letters in phone", {"phone": "03-1234-abcd"}, "phone"),
    ("month 13", {"start_date": "2024/13/1"}, "start_date"),
    ("no 29 February", {"start_date": "2023/2/29"}, "start_date"),
    ("day first", {"start_date": "01/04/2024"}, "start_date"),
    ("end before start", {"start_date": "2024/4/1", "end_date": "2024/3/31"}, "end_date"),
    ("unknown department", {"department": "購買部"}, "department"),
    ("unknown status", {"status": "retired"}, "status"),
    ("no e-mail", {"email": None}, "email"),
    ("no name", {"name": None}, "name"),
    ("no start_date", {"start_date": None}, "start_date"),
]


@pytest.mark.parametrize("case,change,field", BAD_CREATES, ids=[c[0] for c in BAD_CREATES])
def test_a_create_that_breaks_a_rule_is_refused_naming_the_field(state, admin, directory, case, change, field):
    suffix = f"v{BAD_CREATES.index((case, change, field)):02d}"
    body = new_user(suffix, **change)
    directory.append(body.get("user_id", uid(suffix)))
    resp = admin_call(state, "POST", "/users", admin["access_token"], json=body)
    assert field in error_fields(resp), resp.text
    assert cognito_user(state, body["user_id"]) is None, f"{case}: created although refused"


def test_every_broken_rule_is_named_at_once(state, admin, directory):
    body = new_user("vm", name="=x", email="bad", start_date="2024/13/1", department="nowhere")
    directory.append(body["user_id"])
    resp = admin_call(state, "POST", "/users", admin["access_token"], json=body)
    assert {"name", "email", "start_date", "department"} <= error_fields(resp), resp.text
    assert_not_created(state, admin, body["user_id"])


def test_the_rules_allow_what_the_hr_file_allows(state, admin, directory):
    user = create(state, admin, directory, new_user(
        "ok", user_id=f"At{RUN}_ok.1-x", name="Smith, Jo", email=f"jo+hr.{RUN}@Example.co.jp", department="営業部",
        phone="+81 3-1234-5678", start_date="2024-02-29", end_date="2099/1/2"))
    assert user["user_id"] == f"At{RUN}_ok.1-x"
    assert (user["department"], user["phone"]) == ("sales", "+81 3-1234-5678"), "a department's name is its id"
    assert (user["start_date"], user["end_date"]) == ("2024-02-29", "2099-01-02")
    zeros = create(state, admin, directory, new_user("z", user_id=f"00{RUN}"))
    assert zeros["user_id"] == f"00{RUN}", "an employee number keeps its leading zeros"


def test_a_user_id_that_exists_conflicts(state, admin, directory):
    first = create(state, admin, directory, new_user("dup"))
    again = new_user("dup", name="Someone Else", email=f"else.{RUN}@example.com")
    expect_error(admin_call(state, "POST", "/users", admin["access_token"], json=again), 409, "conflict")
    assert get_user(state, admin["access_token"], first["user_id"]) == first, "the existing user is untouched"


def test_a_body_that_is_not_json_is_refused(state, admin, directory):
    body = new_user("mt")
    directory.append(body["user_id"])
    resp = admin_call(state, "POST", "/users", admin["access_token"], data=json.dumps(body),
                      headers={"Content-Type": "text/plain"})
    expect_error(resp, 415, "unsupported_media_type")
    expect_error(admin_call(state, "POST", "/users", admin["access_token"], data=b"{not json",
                            headers={"Content-Type": "application/json"}), 400, "bad_request")
    assert_not_created(state, admin, body["user_id"])


@pytest.fixture(scope="module")
def patch_target(state, admin, directory) -> dict:
    return create(state, admin, directory, new_user("pt", job_title="係長"))


@pytest.mark.parametrize("change,field", [
    ({}, None),
    ({"nickname": "x"}, None),
    ({"user_id": f"at{RUN}other"}, None),
    ({"name": "Ok", "sub": "x"}, None),
    ({"name": None}, "name"),
    ({"email": None}, "email"),
    ({"name": "=HYPERLINK(\"x\")"}, "name"),
    ({"job_title": "-1"}, "job_title"),
    ({"phone": "abc"}, "phone"),
    ({"start_date": "2024/2/30"}, "start_date"),
    ({"end_date": "2020/1/1"}, "end_date"),
    ({"department": "purchasing"}, "department"),
    ({"status": "gone"}, "status"),
], ids=lambda v: json.dumps(v, ensure_ascii=True) if isinstance(v, dict) else str(v))
def test_a_patch_that_breaks_a_rule_changes_nothing(state, admin, patch_target, change, field):
    path = f"/users/{patch_target['user_id']}"
    resp = admin_call(state, "PATCH", path, admin["access_token"], json=change)
    if field is None:
        expect_error(resp, 400, "bad_request")
    else:
        assert field in error_fields(resp), resp.text
    assert get_user(state, admin["access_token"], patch_target["user_id"]) == patch_target


# --------------------------------------------------------------------------
# Revocation: a token stops working, though unexpired
# --------------------------------------------------------------------------


def provider_call(state, token: str) -> int:
    """A cheap allowed provider call (Gemini countTokens on the mock)."""
    resp = requests.post(
        f"{state['base_url']}/gemini/v1beta/models/gemini-2.0-flash:countTokens",
        headers={"x-goog-api-key": token},
        json={"contents": [{"role": "user", "parts": [{"text": "revocation probe"}]}]},
        timeout=HTTP_TIMEOUT,
    )
    return resp.status_code


def staleness_bound(state) -> float:
    return float(state["functions"]["authorizer"]["GATEWAY_REVOCATION_CACHE_SECS"]) + REVOCATION_MARGIN_S


def wait_for_status(state, token: str, want: int, within: float) -> float:
    start = time.monotonic()
    seen = []
    while True:
        status = provider_call(state, token)
        seen.append(status)
        if status == want:
            return time.monotonic() - start
        if time.monotonic() - start > within:
            pytest.fail(f"the provider call did not answer {want} within {within:.0f} s; it answered {seen[-5:]}")
        time.sleep(0.25)


def signed_in_user(state, admin, directory, suffix: str) -> tuple[str, str]:
    """A user created through the API, confirmed, given the gateway scopes and signed in; the token's iat
    is a whole second in the past when this returns (so a revocation now is after it)."""
    user_id = create(state, admin, directory, new_user(suffix, department="engineering"))["user_id"]
    add_to_groups(state, user_id, ["gateway-all"])
    confirm_cognito_user(state, user_id)
    token = sign_in(state, user_id)["access_token"]
    claims = unverified_claims(token)
    assert claims["exp"] > time.time() + 600, claims
    assert provider_call(state, token) == 200, "the new user's token works before any revocation"
    while time.time() < claims["iat"] + 1.05:
        time.sleep(0.05)
    return user_id, token


@pytest.mark.parametrize("action", ["sign-out", "disable", "password-reset", "delete"])
def test_an_unexpired_token_is_refused_after_its_user_is_revoked(state, admin, directory, action):
    user_id, token = signed_in_user(state, admin, directory, f"rv{action[:2]}")
    method, path, status = {
        "sign-out": ("POST", f"/users/{user_id}/sign-out", 200),
        "disable": ("PUT", f"/users/{user_id}/disable", 200),
        "password-reset": ("POST", f"/users/{user_id}/password-reset", 200),
        "delete": ("DELETE", f"/users/{user_id}", 204),
    }[action]
    resp = admin_call(state, method, path, admin["access_token"])
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert unverified_claims(token)["exp"] > time.time() + 60, "the token is still unexpired"
    wait_for_status(state, token, 401, staleness_bound(state))


def test_a_sign_out_refuses_only_the_tokens_issued_before_it(state, admin, directory):
    user_id, old = signed_in_user(state, admin, directory, "so2")
    signed_out = expect_json(admin_call(state, "POST", f"/users/{user_id}/sign-out", admin["access_token"]),
                             200, "SignOutResult")
    revoked_before = parse_rfc3339(signed_out["revoked_before"])
    assert revoked_before > unverified_claims(old)["iat"], (signed_out, unverified_claims(old))
    wait_for_status(state, old, 401, staleness_bound(state))
    # A token issued after the sign-out works, the old one still does not.
    while time.time() < math.ceil(revoked_before) + 1.05:
        time.sleep(0.05)
    new = sign_in(state, user_id)["access_token"]
    assert unverified_claims(new)["iat"] >= revoked_before
    wait_for_status(state, new, 200, staleness_bound(state))
    assert provider_call(state, old) == 401
    # Disabling refuses every token, the new one too.
    expect_json(admin_call(state, "PUT", f"/users/{user_id}/disable", admin["access_token"]), 200, "User")
    wait_for_status(state, new, 401, staleness_bound(state))


# --------------------------------------------------------------------------
# Provisioning through the API: upload, sync status, download
# --------------------------------------------------------------------------


def upload_ticket(state, admin, **body) -> dict:
    before = time.time()
    ticket = expect_json(admin_call(state, "POST", "/users/csv/upload", admin["access_token"], json=body),
                         201, "UploadTicket")
    ttl = float(state["functions"]["admin-api"]["GATEWAY_UPLOAD_URL_TTL_SECS"])
    expires = parse_rfc3339(ticket["expires_at"])
    assert before + ttl - 60 < expires < time.time() + ttl + 60, (ticket, ttl)
    assert ticket["method"] == "PUT", ticket
    return ticket


def put_file(ticket: dict, body: bytes) -> None:
    resp = requests.put(ticket["url"], data=body, headers=ticket["headers"], timeout=HTTP_TIMEOUT)
    assert resp.status_code in (200, 204), (resp.status_code, resp.text[:500])


def hr_file(*rows: str) -> bytes:
    return ("\r\n".join([APPENDIX_2_HEADER, *rows]) + "\r\n").encode("utf-8")


@pytest.fixture(scope="module")
def uploaded(state, admin, directory) -> dict:
    """An HR file with two new users, uploaded through a presigned URL and applied."""
    one, two = uid("c1"), uid("c2")
    directory.extend([one, two])
    ticket = upload_ticket(state, admin, filename="hr.csv.age")
    assert re.fullmatch(rf"incoming/[^/]+-{UUID_RE}-hr\.csv\.age", ticket["key"]), ticket
    put_file(ticket, provisioning_encrypt(state, hr_file(
        f"{one},アップロード一郎,{one}@example.com,営業部,主任,03-1111-2222,2024/4/1,,active",
        f"{two},Upload Two,{two}@example.com,Engineering,,,2024/04/02,2099/3/31,active",
    )))
    report_key, report = wait_for_provisioning_report(state, ticket["key"], REPORT_WITHIN)
    assert report["file_error"] is None and report["dry_run"] is False, report
    assert report["counts"] == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 0, "failed": 0}, report
    return {"ticket": ticket, "report_key": report_key, "report": report, "users": (one, two)}


def test_an_uploaded_hr_file_creates_its_users(state, admin, uploaded):
    one, two = uploaded["users"]
    first = get_user(state, admin["access_token"], one)
    assert (first["name"], first["department"], first["job_title"], first["phone"], first["start_date"],
            first["end_date"], first["hr_status"], first["enabled"]) == (
        "アップロード一郎", "sales", "主任", "03-1111-2222", "2024-04-01", None, "active", True), first
    second = get_user(state, admin["access_token"], two)
    assert (second["department"], second["start_date"], second["end_date"], second["job_title"]) == (
        "engineering", "2024-04-02", "2099-03-31", None), second


def test_the_sync_status_lists_the_run_first_with_its_counts(state, admin, reader, uploaded):
    s3 = aws_client(state, "s3")
    for caller in (admin, reader):
        jobs = expect_json(admin_call(state, "GET", "/users/sync/status", caller["access_token"]), 200,
                           "SyncStatus")["jobs"]
        assert 1 <= len(jobs) <= 10, "10 runs by default"
        job = jobs[0]
        report = uploaded["report"]
        assert job["source_key"] == uploaded["ticket"]["key"], jobs[:2]
        assert job["report_key"] == uploaded["report_key"], job
        assert job["csv_report_key"] == uploaded["report_key"][: -len(".json")] + ".csv", job
        assert (job["dry_run"], job["encoding"], job["file_error"], job["today"], job["counts"]) == (
            False, "utf-8", None, report["today"], report["counts"]), job
        assert abs(parse_rfc3339(job["finished_at"]) - time.time()) < 600, job
        finished = [parse_rfc3339(j["finished_at"]) for j in jobs]
        assert finished == sorted(finished, reverse=True), "newest first"
    for key in (job["report_key"], job["csv_report_key"]):
        s3.head_object(Bucket=state["provisioning"]["reports_bucket"], Key=key)
    one = expect_json(admin_call(state, "GET", "/users/sync/status", admin["access_token"], params={"limit": 1}),
                      200, "SyncStatus")["jobs"]
    assert [j["source_key"] for j in one] == [uploaded["ticket"]["key"]]
    for limit in ("0", "51"):
        expect_error(admin_call(state, "GET", "/users/sync/status", admin["access_token"], params={"limit": limit}),
                     400, "bad_request")


def test_a_dry_run_upload_plans_and_applies_nothing(state, admin, directory, uploaded):
    user_id = uid("dr")
    directory.append(user_id)
    ticket = upload_ticket(state, admin, dry_run=True, filename="plan.csv.age")
    assert ticket["key"].startswith("dry-run/") and ticket["key"].endswith("-plan.csv.age"), ticket
    put_file(ticket, provisioning_encrypt(state, hr_file(
        f"{user_id},Dry Run,{user_id}@example.com,Sales,,,2024/4/1,,active")))
    _, report = wait_for_provisioning_report(state, ticket["key"], REPORT_WITHIN)
    assert report["dry_run"] is True and report["counts"]["created"] == 1, report
    assert_not_created(state, admin, user_id)
    job = expect_json(admin_call(state, "GET", "/users/sync/status", admin["access_token"]), 200,
                      "SyncStatus")["jobs"][0]
    assert (job["source_key"], job["dry_run"], job["counts"]) == (ticket["key"], True, report["counts"]), job


def test_an_upload_without_a_name_is_named_hr_csv_age(state, admin):
    ticket = upload_ticket(state, admin)
    assert re.fullmatch(rf"incoming/[^/]+-{UUID_RE}-hr\.csv\.age", ticket["key"]), ticket
    assert upload_ticket(state, admin)["key"] != ticket["key"], "every upload gets its own key"


@pytest.fixture(scope="module")
def exported(state, admin, directory) -> dict:
    """A user whose cells test the download: Japanese, a comma, an international phone number."""
    return create(state, admin, directory, new_user(
        "dl", name="試験花子", job_title="課長, 代理", phone="+81 3-1234-5678", department="hr",
        start_date="2024/4/1", end_date="2099/3/31"))


def rows_of(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows and all(len(r) == 9 for r in rows), [r for r in rows if len(r) != 9][:3]
    return rows


def test_the_download_is_appendix_2_in_utf8_with_a_bom_and_formula_safe(state, admin, reader, exported):
    for caller, params in [(admin, {}), (admin, {"encoding": "utf-8"}), (reader, {})]:
        resp = admin_call(state, "GET", "/users/csv/download", caller["access_token"], params=params)
        assert resp.status_code == 200, (resp.status_code, resp.text[:300])
        assert resp.headers["content-type"].replace(" ", "").lower() == "text/csv;charset=utf-8", resp.headers
        assert resp.headers["content-disposition"] == 'attachment; filename="users.csv"', resp.headers
        assert resp.content.startswith(b"\xef\xbb\xbf"), resp.content[:10]
        text = resp.content.decode("utf-8")[1:]
        assert text.splitlines()[0] == APPENDIX_2_HEADER
        rows = rows_of(text)
        by_id = {r[0]: r for r in rows[1:]}
        assert by_id[exported["user_id"]] == [
            exported["user_id"], "試験花子", exported["email"], "hr", "課長, 代理", "'+81 3-1234-5678",
            "2024/04/01", "2099/03/31", "active"], by_id[exported["user_id"]]
        for row in rows[1:]:
            for cell in row:
                assert not cell.startswith(FORMULA_STARTS), f"a cell a spreadsheet would run: {row}"
            for date in row[6:8]:
                assert date == "" or re.fullmatch(r"\d{4}/\d{2}/\d{2}", date), row
        assert len(by_id) == len(rows) - 1, "one row per user"


def test_the_download_in_cp932_reads_as_excel_in_japan_reads_it(state, admin, exported):
    resp = admin_call(state, "GET", "/users/csv/download", admin["access_token"], params={"encoding": "cp932"})
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].replace(" ", "").lower() == "text/csv;charset=shift_jis", resp.headers
    assert resp.headers["content-disposition"] == 'attachment; filename="users.csv"', resp.headers
    assert not resp.content.startswith(b"\xef\xbb\xbf")
    text = resp.content.decode("cp932")
    assert text.splitlines()[0] == APPENDIX_2_HEADER
    assert "試験花子" in text
    row = next(r for r in rows_of(text) if r[0] == exported["user_id"])
    assert row[1:6] == ["試験花子", exported["email"], "hr", "課長, 代理", "'+81 3-1234-5678"], row


def test_the_download_refuses_an_unknown_encoding(state, admin):
    resp = admin_call(state, "GET", "/users/csv/download", admin["access_token"], params={"encoding": "latin-1"})
    expect_error(resp, 400, "bad_request")


# --------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audited(state, admin, directory) -> dict:
    """A create and a disable by the administrator, and the audit trail once both events are in it."""
    body = new_user("au", email=f"audit.{RUN}@example.com", phone="03-9999-0000", job_title="監査対象")
    user = create(state, admin, directory, body)
    expect_json(admin_call(state, "PUT", f"/users/{user['user_id']}/disable", admin["access_token"]), 200, "User")
    events, raw = wait_for_audit(state, lambda evs: admin_events(evs, "users.create", user["user_id"])
                                 and admin_events(evs, "users.disable", user["user_id"]))
    return {"user": user, "body": body, "events": events, "raw": raw}


@pytest.mark.parametrize("action,status", [("users.create", 201), ("users.disable", 200)])
def test_each_change_is_one_admin_audit_event_by_the_administrator(audited, admin, action, status):
    user = audited["user"]
    found = admin_events(audited["events"], action, user["user_id"])
    assert len(found) == 1, found
    event = found[0]
    jsonschema.validate(event, audit_schema())
    assert event["schema_version"] >= 3, event
    assert (event["record"], event["decision"], event["outcome"], event["status"]) == (
        "final", "allow", "complete", status), event
    assert event["operation"] == action, event
    assert event["principal"] is not None and event["principal"]["subject"] == admin["sub"], event
    assert event["admin"]["actor"] == "admin-api" and event["admin"]["source"] is None, event
    assert isinstance(event["admin"]["changed"], list), event
    assert all(isinstance(name, str) for name in event["admin"]["changed"]), event


def test_admin_events_hold_no_personal_value_and_no_password(audited, admin):
    user, body = audited["user"], audited["body"]
    for action in ("users.create", "users.disable"):
        text = json.dumps(admin_events(audited["events"], action, user["user_id"]), ensure_ascii=False)
        assert not EMAIL_RE.search(text), f"an e-mail address in the {action} event: {text}"
        for value in (body["email"], body["phone"], body["job_title"], body["name"], STRONG_PASSWORD,
                      admin["access_token"]):
            assert value not in text, f"{value!r} in the {action} event"
    raw = audited["raw"].decode("utf-8", errors="replace")
    assert body["email"] not in raw and admin["access_token"] not in raw


def test_provisioning_through_the_api_is_audited_as_the_provisioner(state, admin, uploaded):
    one, two = uploaded["users"]
    key = uploaded["ticket"]["key"]
    events, _ = wait_for_audit(state, lambda evs: admin_events(evs, "users.create", one)
                               and admin_events(evs, "users.create", two) and admin_events(evs, "users.csv-upload"))
    for user_id in (one, two):
        found = admin_events(events, "users.create", user_id)
        assert len(found) == 1, found
        event = found[0]
        jsonschema.validate(event, audit_schema())
        assert event["schema_version"] >= 3, event
        assert (event["record"], event["decision"], event["outcome"], event["status"]) == (
            "final", "allow", "complete", 200), event
        assert event["principal"] is None and event["admin"]["actor"] == "provisioner", event
        assert event["admin"]["source"] == key, event
        assert not EMAIL_RE.search(json.dumps(event)), event
    uploads = [e for e in admin_events(events, "users.csv-upload") if e["admin"].get("source") == key]
    assert len(uploads) == 1, admin_events(events, "users.csv-upload")
    assert uploads[0]["admin"]["actor"] == "admin-api" and uploads[0]["principal"]["subject"] == admin["sub"]
