"""Faults on the audit trail's way: the client never notices, and no request's outcome is lost or counted
twice.

- The audit queue is gone: every record goes to the function's log instead (CloudWatch keeps it there),
  and each request still has exactly one final record, in the log.
- The audit writer crashes after its S3 write and before SQS deletes the batch: SQS redelivers the batch,
  the writer writes it again, and each request still has exactly one final record (by event id).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import openai
import pytest

from helpers import HTTP_TIMEOUT, aws_client, create_cognito_user, records_of, unique_prompt, wait_for_events
from test_local_stack import SecondStack

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
