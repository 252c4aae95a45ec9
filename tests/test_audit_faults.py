"""Faults on the audit trail's way: the client never notices, and no request's outcome is lost or counted
twice.

- The audit queue is gone: every record goes to the function's log instead (CloudWatch keeps it there),
  and each request still has exactly one final record, in the log.
- The audit writer crashes after its S3 write and before SQS deletes the batch: SQS redelivers the batch,
  the writer writes it again, and each request still has exactly one final record (by event id).
- The whole process running the route is killed (SIGKILL) in the middle of a stream, as a sandbox that
  runs out of memory would be: its accepted record has already left, and the hourly audit job gives the
  request exactly one `incomplete` record, so the count still balances.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openai
import pytest
import requests

from helpers import (
    HTTP_TIMEOUT,
    audit_events,
    aws_client,
    create_cognito_user,
    records_of,
    unique_prompt,
    wait_for_events,
)
from test_audit_integrity import LAG_HOURS, hour_text
from test_local_stack import SECOND_MOTO_PORT, SecondStack, listening

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOGGED = re.compile(r"audit_event=(\{.*\}) why=")


def logged_records(log: str) -> list[dict]:
    """The audit records a stack wrote to its log because the queue would not take them."""
    return [json.loads(m.group(1)) for m in LOGGED.finditer(ANSI.sub("", log))]


def azure(state: dict, token: str, **headers: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{state['base_url'].rstrip('/')}/azure-openai", api_version="2024-10-21",
        api_key=token, max_retries=0, timeout=HTTP_TIMEOUT, default_headers=headers,
    )


def chat(client: openai.AzureOpenAI, prompt: str, stream: bool = False) -> str:
    """One call; returns the gateway's request id."""
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": prompt}], stream=True
        ) as response:
            for _ in response.iter_lines():
                pass
            return response.headers["x-gateway-request-id"]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}]
    )
    raw.parse()
    return raw.headers["x-gateway-request-id"]


def test_a_dropped_audit_queue_loses_no_outcome(tmp_path):
    stack = SecondStack(tmp_path / "stack", GATEWAY_TRANSPORT="direct")
    try:
        stack.wait_ready()
        state = json.loads(stack.state_file.read_text())
        user = create_cognito_user(state, ["gateway-all"])
        aws_client(state, "sqs").delete_queue(QueueUrl=state["queues"]["audit"])

        client = azure(state, user["access_token"])
        request_ids = [chat(client, unique_prompt("no audit queue"), stream=i % 2 == 1) for i in range(4)]

        deadline = time.monotonic() + 20
        while True:
            logged = logged_records(stack.output())
            finals = {e["request_id"] for e in logged if e.get("record") == "final"}
            if set(request_ids) <= finals or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for request_id in request_ids:
            records = records_of(logged, request_id)
            assert len(records.get("final", [])) == 1, (request_id, records)
            assert records["final"][0]["outcome"] == "complete", records["final"][0]
            assert len(records.get("authorized", [])) == 1 and len(records.get("accepted", [])) == 1, records
        assert user["access_token"] not in stack.output(), "a logged record carried the token"
    finally:
        stack.stop()


def test_a_writer_crash_between_write_and_delete_loses_and_doubles_nothing(state, all_user):
    log_path = Path(os.environ.get("GATEWAY_LOCAL_DIR", "")) / "stack.log"
    if not log_path.is_file():
        pytest.skip("the stack's log is not at $GATEWAY_LOCAL_DIR/stack.log (local/lib.sh puts it there)")
    crashes_before = log_path.read_text(errors="replace").count("injected audit writer crash")

    client = azure(state, all_user["access_token"], **{"User-Agent": "audit-fault-test mock-audit-writer-crash"})
    request_ids = [chat(client, unique_prompt("writer crash"), stream=i % 2 == 1) for i in range(3)]
    events, _ = wait_for_events(state, set(request_ids))

    crashes = log_path.read_text(errors="replace").count("injected audit writer crash") - crashes_before
    assert crashes >= 1, "the writer did not crash: the test proved nothing"
    for request_id in request_ids:
        records = records_of(events, request_id)
        finals = {e["event_id"] for e in records.get("final", [])}
        assert len(finals) == 1, f"{request_id}: one final event, however often its batch was written: {records}"
        assert {"authorized", "accepted", "final"} <= set(records), records


def start_moto(port: int) -> subprocess.Popen:
    """moto on its own, as the stack would start it, so it outlives a killed stack."""
    process = subprocess.Popen(
        [sys.executable, "local/moto_server.py", "127.0.0.1", str(port)],
        cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=2).ok:
                return process
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"moto did not answer on port {port}")


def test_a_process_killed_mid_stream_leaves_exactly_one_incomplete_record(tmp_path):
    assert not listening(SECOND_MOTO_PORT), f"something already listens on {SECOND_MOTO_PORT}"
    moto = start_moto(SECOND_MOTO_PORT)
    endpoint = f"http://127.0.0.1:{SECOND_MOTO_PORT}"
    first = SecondStack(tmp_path / "first", AWS_ENDPOINT_URL=endpoint, GATEWAY_TRANSPORT="direct")
    second = None
    try:
        first.wait_ready()
        state = json.loads(first.state_file.read_text())
        client = azure(state, create_cognito_user(state, ["gateway-all"])["access_token"])
        # mock-slow sends a word every 300 ms: the stream is still running when the process dies.
        prompt = " ".join(f"word{i}" for i in range(40))
        received = 0
        with pytest.raises(Exception):
            with client.chat.completions.with_streaming_response.create(
                model="mock-slow", messages=[{"role": "user", "content": prompt}], stream=True
            ) as response:
                request_id = response.headers["x-gateway-request-id"]
                for line in response.iter_lines():
                    received += line.startswith("data:")
                    if received == 3:
                        first.process.send_signal(signal.SIGKILL)
        assert received >= 3, "the stream never started"

        # A new environment on the same AWS (as Lambda starts one): its audit writer drains the queue.
        second = SecondStack(tmp_path / "second", AWS_ENDPOINT_URL=endpoint, GATEWAY_TRANSPORT="direct")
        second.wait_ready()
        state = json.loads(second.state_file.read_text())
        deadline = time.monotonic() + 30
        seen: dict[str, list[dict]] = {}
        while time.monotonic() < deadline and not {"authorized", "accepted"} <= set(seen):
            events, _ = audit_events(state)
            seen = records_of(events, request_id)
            time.sleep(0.5)
        assert {"authorized", "accepted"} <= set(seen) and "final" not in seen, seen

        through = hour_text(datetime.now(timezone.utc) + timedelta(hours=LAG_HOURS))
        resp = requests.post(f"{state['control_url']}/_local/audit-digest", params={"through": through},
                             timeout=HTTP_TIMEOUT)
        assert resp.status_code == 200, resp.text
        events, _ = audit_events(state)
        outcomes = [e for e in events if e["request_id"] == request_id and e["record"] in ("final", "incomplete")]
        assert len(outcomes) == 1, f"exactly one outcome for the killed request: {outcomes}"
        assert outcomes[0]["record"] == "incomplete" and outcomes[0]["outcome"] == "unknown", outcomes[0]
        assert "accepted" in outcomes[0]["reason"], outcomes[0]
    finally:
        for stack in (first, second):
            if stack is not None:
                stack.stop()
        moto.kill()
        moto.wait(timeout=10)
