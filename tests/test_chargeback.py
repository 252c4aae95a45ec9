"""Chargeback from the audit trail (functions/scheduler/src/chargeback.rs, shared/src/rollup.rs): the
scheduler's `chargeback` job sums the month's request outcomes per department, user, provider and model
into the reports bucket, and the admin API serves the report. Its totals must equal the audit events'.
(functions/scheduler's unit test rolls up a generated month of events across partitions, late objects and
duplicates; this test checks the real stack's trail end to end.)
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import time

import requests

from helpers import HTTP_TIMEOUT, admin_call, audit_events, wait_for_events

ROUTES = {"azure-openai", "bedrock-claude", "gemini"}
FORMULA_NAME = "=HYPERLINK(\"http://x\")"


def run_chargeback(state, month: str) -> dict:
    answer = requests.post(f"{state['control_url']}/_local/scheduler", json={"job": "chargeback", "month": month},
                           timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def micros(cost_usd: float) -> int:
    """To the nearest micro-dollar, a half away from zero, as the report rounds each event (Python's
    round() would take a half to the even neighbour)."""
    scaled = cost_usd * 1_000_000
    whole = math.floor(scaled)
    return whole + (1 if scaled - whole >= 0.5 else 0)


def expected_totals(state, month: str) -> dict:
    """The month's outcomes as the trail holds them, each event once."""
    events, _ = audit_events(state)
    seen, totals = set(), {"requests": 0, "refused": 0, "total_tokens": 0, "cost_micros": 0, "events": 0}
    for e in events:
        outcome = e.get("record") in ("final", "incomplete") and e.get("provider") in ROUTES and not e.get("admin")
        if not outcome or not e["time"].startswith(month) or e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        totals["events"] += 1
        usage = e.get("usage")
        if e["decision"] != "allow" and usage is None:
            totals["refused"] += 1
            continue
        totals["requests"] += 1
        if usage:
            totals["total_tokens"] += max(usage["total_tokens"], usage["input_tokens"] + usage["output_tokens"])
            if e.get("cost_usd") is not None:
                totals["cost_micros"] += micros(e["cost_usd"])
    return totals


def chat(state, key: str) -> requests.Response:
    return requests.post(f"{state['base_url']}/azure-openai/openai/deployments/gpt-4o-mini/chat/completions",
                         params={"api-version": "2024-10-21"}, headers={"api-key": key},
                         json={"messages": [{"role": "user", "content": "chargeback"}]}, timeout=HTTP_TIMEOUT)


def test_the_months_chargeback_report_totals_equal_the_audit_events(state, token_for):
    admin = token_for("gateway-admins")
    issued = admin_call(state, "POST", "/apikeys", admin,
                        json={"name": FORMULA_NAME, "department": "sales", "scopes": ["text:openai"]})
    assert issued.status_code == 201, issued.text
    key = issued.json()["key"]
    deadline = time.monotonic() + 5
    while (answer := chat(state, key)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert answer.status_code == 200, answer.text
    wait_for_events(state, {answer.headers["x-gateway-request-id"]})
    month = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m")

    # Other tests' last events may still be landing: run until the report and the trail agree twice.
    for _ in range(10):
        job = run_chargeback(state, month)
        expected = expected_totals(state, month)
        got = job["totals"]
        if job["events"] == expected["events"] and all(got[k] == expected[k] for k in expected if k != "events"):
            break
        time.sleep(2)
    assert job["events"] == expected["events"], (job, expected)
    for field in ("requests", "refused", "total_tokens", "cost_micros"):
        assert got[field] == expected[field], (field, got, expected)
    assert expected["requests"] > 0

    report = admin_call(state, "GET", "/reports/chargeback", admin, params={"month": month})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["period"] == month and body["totals"] == got
    assert sum(d["total_tokens"] for d in body["departments"]) == got["total_tokens"]
    ours = [r for r in body["rows"] if r["subject"] == f"apikey:{issued.json()['api_key']['id']}"]
    # Its one relayed request under its department; any tries before the new key was known are
    # refusals, under no department (the authorizer knew only the key's id).
    charged = [r for r in ours if r["requests"]]
    assert len(charged) == 1 and charged[0]["department"] == "sales" and charged[0]["requests"] == 1, ours
    assert all(r["department"] == "(none)" and r["requests"] == 0 for r in ours if r is not charged[0]), ours

    as_csv = admin_call(state, "GET", "/reports/chargeback", admin, params={"month": month, "format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.content.decode("utf-8-sig"))))
    assert sum(int(r["total_tokens"]) for r in rows) == got["total_tokens"]
    assert any(r["username"] == "'" + FORMULA_NAME for r in rows), "a formula is written as text"
    assert not any(r["username"].startswith(("=", "+", "-", "@")) for r in rows)

    # Refusals: a month not yet reported, a bad month, a reader may read, a user may not.
    assert admin_call(state, "GET", "/reports/chargeback", admin, params={"month": "2001-01"}).status_code == 404
    assert admin_call(state, "GET", "/reports/chargeback", admin, params={"month": "2001-13"}).status_code == 400
    reader = token_for("gateway-admin-readers")
    assert admin_call(state, "GET", "/reports/chargeback", reader, params={"month": month}).status_code == 200
    assert admin_call(state, "GET", "/reports/chargeback", token_for("gateway-text"),
                      params={"month": month}).status_code == 403
    # The days so far, from the daily rollups the job wrote: sales' totals are the report's.
    first, today = f"{month}-01", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    ranged = admin_call(state, "GET", "/departments/sales/usage", admin,
                        params={"from": first, "to": today, "group_by": "user"})
    assert ranged.status_code == 200, ranged.text
    ranged = ranged.json()
    sales = next(d for d in body["departments"] if d["department"] == "sales")
    assert ranged["missing_days"] == [] and ranged["totals"]["total_tokens"] == sales["total_tokens"], ranged
    assert any(g["key"] == f"apikey:{issued.json()['api_key']['id']}" for g in ranged["groups"])
    assert admin_call(state, "GET", "/departments/sales/usage", admin,
                      params={"from": first}).status_code == 400
    assert admin_call(state, "GET", "/departments/sales/usage", admin,
                      params={"from": first, "to": today, "group_by": "colour"}).status_code == 400
    summary = admin_call(state, "GET", "/departments/summary", admin).json()
    assert [d["department"] for d in summary["departments"]] == sorted(d["department"] for d in summary["departments"])
    admin_call(state, "POST", f"/apikeys/{issued.json()['api_key']['id']}/revoke", admin)
