"""Accounts kept in step with HR dates, and revocation the authorizer sees (issue 12).

The scheduler's daily date job (invoked through the local stack's control endpoint, as its EventBridge
rule would, with `now_millis` moving the calendar instead of the clock) disables users whose end_date
has passed and enables those whose start_date has come; a disabled user's still-valid access token is
then refused by the authorizer within the revocation cache's bound. Future starters get their
invitation (through SES; moto keeps the messages) on the day they are enabled, not before.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
import requests

import helpers

JST = dt.timezone(dt.timedelta(hours=9))  # GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES defaults to 540
CHAT = "/gemini/v1beta/models/gemini-2.0-flash:generateContent"


@pytest.fixture(scope="module")
def admin(state) -> dict:
    user = helpers.create_cognito_user(state, ["gateway-admins"])
    yield {"Authorization": f"Bearer {user['access_token']}"}
    helpers.delete_cognito_user(state, user["username"])


def today_jst() -> dt.date:
    return dt.datetime.now(JST).date()


def millis_on(day: dt.date) -> int:
    """Noon of `day` in Japan, as epoch milliseconds."""
    return int(dt.datetime(day.year, day.month, day.day, 12, tzinfo=JST).timestamp() * 1000)


def run_date_job(state: dict, day: dt.date) -> dict:
    resp = requests.post(f"{state['control_url']}/_local/scheduler", params={"now_millis": millis_on(day)},
                         json={"job": "user-dates"}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def create(state: dict, admin: dict, **fields) -> dict:
    user_id = fields.pop("user_id", f"7{uuid.uuid4().int % 10**8:08d}")
    body = {"user_id": user_id, "name": "期日 太郎", "email": f"{user_id}@example.com", "department": "sales",
            "start_date": "2024/04/01", **fields}
    resp = requests.post(f"{state['base_url']}/admin/users", headers=admin, json=body, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()


def sign_in(state: dict, username: str) -> str:
    idp = helpers.aws_client(state, "cognito-idp")
    idp.admin_set_user_password(UserPoolId=state["user_pool_id"], Username=username,
                                Password=helpers.STRONG_PASSWORD, Permanent=True)
    idp.admin_add_user_to_group(UserPoolId=state["user_pool_id"], Username=username, GroupName="gateway-all")
    result = idp.admin_initiate_auth(UserPoolId=state["user_pool_id"], ClientId=state["app_client_id"],
                                     AuthFlow="ADMIN_USER_PASSWORD_AUTH",
                                     AuthParameters={"USERNAME": username, "PASSWORD": helpers.STRONG_PASSWORD})
    return result["AuthenticationResult"]["AccessToken"]


def chat(state: dict, token: str) -> int:
    resp = requests.post(f"{state['base_url']}{CHAT}", headers={"x-goog-api-key": token},
                         json={"contents": [{"parts": [{"text": "hello"}]}]}, timeout=30)
    return resp.status_code


def refused_within_the_cache_bound(state: dict, token: str) -> int:
    bound = int(state["functions"]["authorizer"].get("GATEWAY_REVOCATION_CACHE_SECS", "30"))
    deadline = time.monotonic() + bound + 5
    while time.monotonic() < deadline:
        status = chat(state, token)
        if status == 401:
            return status
        time.sleep(0.5)
    return status


def test_a_user_past_end_date_is_disabled_by_the_date_job_and_their_token_refused(state, admin):
    today = today_jst()
    user = create(state, admin, end_date=today.isoformat())
    assert user["enabled"] is True
    token = sign_in(state, user["user_id"])
    assert chat(state, token) == 200

    # Today is still within the contract: nothing changes.
    assert user["user_id"] not in run_date_job(state, today)["disabled"]
    answer = run_date_job(state, today + dt.timedelta(days=1))
    assert user["user_id"] in answer["disabled"], answer

    got = requests.get(f"{state['base_url']}/admin/users/{user['user_id']}", headers=admin, timeout=30).json()
    assert got["enabled"] is False
    assert refused_within_the_cache_bound(state, token) == 401

    # Idempotent: the same day again changes nothing.
    again = run_date_job(state, today + dt.timedelta(days=1))
    assert user["user_id"] not in again["disabled"] + again["enabled"]


def test_a_future_starter_is_invited_and_enabled_on_the_start_date_only(state, admin):
    start = today_jst() + dt.timedelta(days=3)
    user = create(state, admin, start_date=start.isoformat())
    assert user["enabled"] is False
    address = user["email"]
    assert helpers.mail_to(state, address) == [], "no invitation before the start date"

    assert user["user_id"] not in run_date_job(state, start - dt.timedelta(days=1))["enabled"]
    answer = run_date_job(state, start)
    assert user["user_id"] in answer["enabled"], answer
    mails = helpers.mail_to(state, address)
    assert len(mails) == 1, mails
    assert user["user_id"] in mails[0]["body"]
    assert mails[0]["source"] == state["identity"]["mail_from"]


def test_an_administrators_disable_survives_the_date_job(state, admin):
    user = create(state, admin)
    resp = requests.put(f"{state['base_url']}/admin/users/{user['user_id']}/disable", headers=admin, timeout=30)
    assert resp.status_code == 200 and resp.json()["hr_status"] == "inactive"
    answer = run_date_job(state, today_jst())
    assert user["user_id"] not in answer["enabled"]


def test_date_job_changes_are_audited_without_personal_data(state, admin):
    user = create(state, admin, end_date=today_jst().isoformat())
    run_date_job(state, today_jst() + dt.timedelta(days=2))
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        events, _ = helpers.audit_events(state)
        matching = [e for e in events if (e.get("admin") or {}).get("target") == user["user_id"]
                    and e["admin"]["actor"] == "scheduler"]
        if matching:
            break
        time.sleep(1)
    assert matching, "no scheduler audit event"
    event = matching[0]
    assert event["admin"]["action"] == "users.disable"
    assert event["provider"] == "admin" and event["status"] == 200
    assert user["email"] not in str(event)
