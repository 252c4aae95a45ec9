"""The queue transport's failure handling: a dispatcher that crashes on a message gets it again and the
client still gets its answer; a poison message ends in the dead-letter queue and is audited; reply queues
are swept only when idle, and a swept queue is replaced.

tests/run.sh runs the suite once with GATEWAY_TRANSPORT=direct and once with GATEWAY_TRANSPORT=queue; the
direct pass has no request queue and no dispatcher (as a deployment whose routes are all direct), so
these tests skip themselves there and run in the queue pass.
"""

from __future__ import annotations

import json
import uuid
import time

import openai
import pytest
import requests

from adapters.azure_openai import sdk_client
from helpers import (
    AZURE,
    GEMINI,
    HTTP_TIMEOUT,
    audit_events,
    aws_client,
    clear_mock,
    mock_requests,
    requests_to,
    unique_prompt,
)


def queued(state: dict, provider: str) -> bool:
    return state["transports"][provider] == "queue"


def test_dispatcher_crash_is_retried_and_the_client_gets_its_answer(state, base_url, all_token):
    if not queued(state, AZURE):
        pytest.skip("the Azure OpenAI route uses the direct transport in this pass")
    clear_mock(state, AZURE)
    prompt = unique_prompt("crash once")
    started = time.monotonic()
    reply = sdk_client(base_url, "api_key", all_token).chat.completions.create(
        model="gpt-mock-dispatch-crash", messages=[{"role": "user", "content": prompt}]
    )
    assert prompt in reply.choices[0].message.content
    assert time.monotonic() - started >= 1, "the answer came from the redelivery, after the visibility timeout"
    assert len(requests_to(state, AZURE, "/gpt-mock-dispatch-crash/chat/completions")) == 1, (
        "the crashed delivery never reached the provider; the retry did, once"
    )


@pytest.fixture
def gemini_queue(state) -> dict:
    if not queued(state, GEMINI):
        pytest.skip("the Gemini route uses the direct transport in this pass: no request queue")
    return state["queues"]["requests"][GEMINI]


def test_poison_message_is_dead_lettered_and_audited(state, gemini_queue):
    sqs = aws_client(state, "sqs")
    queue = gemini_queue
    sent = sqs.send_message(QueueUrl=queue["url"], MessageBody='{"not": "an envelope"}')
    message_id = sent["MessageId"]

    deadline = time.monotonic() + 60
    dead = []
    while time.monotonic() < deadline and not dead:
        got = sqs.receive_message(QueueUrl=queue["dlq"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        dead = [m for m in got.get("Messages", []) if m["MessageId"] == message_id]
    assert dead, "the poison message did not reach the dead-letter queue"

    found = []
    while time.monotonic() < deadline and not found:
        found = [event for event in audit_events(state)[0] if message_id in json.dumps(event)]
        time.sleep(0.5)
    assert len(found) == 1, found
    event = found[0]
    # A message that is not an envelope is refused (never retried into a provider) and audited once.
    assert event["decision"] == "deny" and event["status"] == 400 and event["transport"] == "queue"
    assert "dead-letter" in event["reason"] and "not a request envelope" in event["reason"]


def _envelope(state, request_id: str, **overrides) -> dict:
    url = state["queues"]["requests"]["gemini"]["url"]
    envelope = {
        "version": 1,
        "request_id": request_id,
        "provider": "gemini",
        "principal": "forger",
        "method": "POST",
        "path": "/v1beta/models/gemini-2.0-flash:generateContent",
        "query": "",
        "headers": [["content-type", "application/json"]],
        "body": {"kind": "inline", "base64": "e30="},
        "reply_to": url.rsplit("/", 1)[0] + "/" + state["queues"]["reply_prefix"] + "forged",
        "deadline_ms": int(time.time() * 1000) + 30_000,
    }
    envelope.update(overrides)
    return envelope


def test_forged_envelopes_are_refused_before_any_call(state, gemini_queue):
    """Anyone able to send to a request queue must not get the dispatcher to call a provider, read
    the payload bucket or write to a queue of their choosing."""
    sqs = aws_client(state, "sqs")
    queue = gemini_queue
    sink = sqs.create_queue(QueueName=f"forgery-sink-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    clear_mock(state, GEMINI)
    forgeries = {
        "reply to a queue of the forger's choosing": _envelope(state, f"forged-{uuid.uuid4().hex[:8]}", reply_to=sink),
        "stored files, granted to nobody": _envelope(state, f"forged-{uuid.uuid4().hex[:8]}", method="GET", path="/v1beta/files"),
        "azure request on the gemini queue": _envelope(state, f"forged-{uuid.uuid4().hex[:8]}", provider="azure-openai",
                                                       path="/openai/deployments/gpt-4o-mini/chat/completions"),
        "payload from another request": _envelope(state, f"forged-{uuid.uuid4().hex[:8]}",
                                                  body={"kind": "s3", "bucket": state["buckets"]["payloads"],
                                                        "key": "payloads/someone-else/request"}),
        "backslash path": _envelope(state, f"forged-{uuid.uuid4().hex[:8]}",
                                    path="/v1beta/models/gemini-2.0-flash:generateContent.\\..\\veo:predictLongRunning"),
    }
    message_ids = {}
    for name, envelope in forgeries.items():
        sent = sqs.send_message(QueueUrl=queue["url"], MessageBody=json.dumps(envelope))
        message_ids[sent["MessageId"]] = name

    deadline = time.monotonic() + 60
    dead = set()
    while time.monotonic() < deadline and len(dead) < len(message_ids):
        got = sqs.receive_message(QueueUrl=queue["dlq"], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        dead |= {m["MessageId"] for m in got.get("Messages", []) if m["MessageId"] in message_ids}
    assert dead == set(message_ids), f"not dead-lettered: {[message_ids[m] for m in set(message_ids) - dead]}"
    assert mock_requests(state, GEMINI) == [], "a forged envelope reached the provider"
    assert "Messages" not in sqs.receive_message(QueueUrl=sink, WaitTimeSeconds=1), "a reply went to the forger's queue"

    found = {}
    while time.monotonic() < deadline and len(found) < len(message_ids):
        found = {}  # each pass reads the whole bucket again
        for event in audit_events(state)[0]:
            for message_id in message_ids:
                if message_id in event["request_id"]:
                    found.setdefault(message_id, []).append(event)
        time.sleep(0.5)
    for message_id, name in message_ids.items():
        events = found.get(message_id, [])
        assert len(events) == 1, f"{name}: {events}"
        assert events[0]["decision"] == "deny" and "forged" in events[0]["reason"], events[0]


def test_sweeper_deletes_only_idle_reply_queues(state):
    sqs = aws_client(state, "sqs")
    prefix = f"{state['queues']['reply_prefix']}sweeptest-{int(time.time())}"
    now = int(time.time())
    stale = sqs.create_queue(QueueName=f"{prefix}-stale",
                             tags={"llm-gateway:reply-queue": "true", "llm-gateway:heartbeat": str(now - 7200)})
    fresh = sqs.create_queue(QueueName=f"{prefix}-fresh",
                             tags={"llm-gateway:reply-queue": "true", "llm-gateway:heartbeat": str(now)})
    other = sqs.create_queue(QueueName=f"{prefix}-not-a-reply-queue")
    resp = requests.post(f"{state['control_url']}/_local/sweep-reply-queues",
                         params={"idle_secs": 3600, "prefix": prefix}, timeout=HTTP_TIMEOUT)
    assert resp.json() == {"deleted": [stale["QueueUrl"]]}
    remaining = sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    assert sorted(remaining) == sorted([fresh["QueueUrl"], other["QueueUrl"]])


def test_a_swept_reply_queue_is_replaced(state, base_url, all_token):
    if not queued(state, AZURE):
        pytest.skip("the Azure OpenAI route uses the direct transport in this pass")
    client = sdk_client(base_url, "api_key", all_token)
    ask = lambda: client.chat.completions.create(  # noqa: E731
        model="gpt-4o", messages=[{"role": "user", "content": unique_prompt("after sweep")}]
    )
    ask()  # the route's reply queue exists and is in use
    sqs = aws_client(state, "sqs")
    prefix = f"{state['queues']['reply_prefix']}azure-openai-"
    queues = sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    assert queues, "the route has a reply queue of its own"
    for url in queues:
        sqs.delete_queue(QueueUrl=url)
    # A request in flight while its queue vanishes may fail, cleanly and quickly; later ones must work.
    try:
        ask()
    except openai.APIStatusError as error:
        assert error.status_code in (502, 504), error
    reply = ask()
    assert reply.choices[0].message.content
    assert sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls"), "a new reply queue was created"
