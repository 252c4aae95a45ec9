"""The audit trail: a mixed run of N requests (successes, streams, 401s, 403, provider 500/429, a provider
that hangs past the deadline) yields exactly N audit events in S3, each valid against the JSON Schema, with
the right status, principal and token counts, and no credential anywhere in the bucket or the logs."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import requests

from helpers import (
    HTTP_TIMEOUT,
    REPO_ROOT,
    audit_schema,
    get_secret,
    is_final,
    records_of,
    state_path,
    wait_for_events,
)

SCHEMA = audit_schema()
API = "api-version=2024-10-21"


def words(text: str) -> int:
    return max(1, len(text.split()))


def reply_words(provider_name: str, prompt: str) -> int:
    return words(f"Mock {provider_name} reply to: {prompt}")


class Run:
    """Sends requests and remembers each one's API Gateway request id and what the audit must say."""

    def __init__(self):
        self.expected: dict[str, dict] = {}
        # The bytes each answered request sent and received, as the client saw them.
        self.exchanged: dict[str, tuple[bytes, bytes]] = {}

    def send_and_leave(self, expect: dict, url: str, **kwargs) -> None:
        """A stream the client abandons after its first chunk: the client is gone before the end."""
        with requests.post(url, stream=True, timeout=HTTP_TIMEOUT, **kwargs) as resp:
            assert resp.status_code == expect["status"], (url, resp.status_code)
            next(resp.iter_content(chunk_size=None))
            request_id = resp.headers["x-amzn-requestid"]
        self.expected[request_id] = expect

    def send(self, expect: dict, method: str, url: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        resp = requests.request(method, url, **kwargs)
        resp.content  # read the whole body: the route audits when the body has ended
        request_id = resp.headers["x-amzn-requestid"]
        assert request_id not in self.expected
        assert resp.status_code == expect["status"], (url, resp.status_code, resp.text[:300])
        self.expected[request_id] = expect
        self.exchanged[request_id] = (resp.request.body or b"", resp.content)
        return resp


@pytest.fixture(scope="module")
def mixed_run(state, all_user, openai_only_token):
    token = all_user["access_token"]
    base, https = state["base_url"], state["https_base_url"]
    deadline_s = state.get("upstream_response_timeout_ms", 120_000) / 1000
    run = Run()
    azure = f"{base}/azure-openai/openai/deployments"
    chat = lambda text, **extra: {"messages": [{"role": "user", "content": text}], **extra}  # noqa: E731
    p1 = "audit run plain chat"
    run.send({"status": 200, "decision": "allow", "provider": "azure-openai", "input": words(p1),
              "output": reply_words("Azure OpenAI", p1), "stream": False},
             "POST", f"{azure}/gpt-4o/chat/completions?{API}", headers={"api-key": token}, json=chat(p1))
    p2 = "audit run streamed chat please"
    run.send({"status": 200, "decision": "allow", "provider": "azure-openai", "input": words(p2),
              "output": reply_words("Azure OpenAI", p2), "stream": True},
             "POST", f"{azure}/gpt-4o/chat/completions?{API}", headers={"authorization": f"Bearer {token}"},
             json=chat(p2, stream=True, stream_options={"include_usage": True}))
    p3 = "audit gemini stream"
    run.send({"status": 200, "decision": "allow", "provider": "gemini", "input": words(p3),
              "output": reply_words("Gemini", p3), "stream": True},
             "POST", f"{base}/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
             headers={"x-goog-api-key": token}, json={"contents": [{"role": "user", "parts": [{"text": p3}]}]})
    p4 = "audit bedrock converse"
    bedrock = f"{https}/bedrock-claude/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0"
    converse = {"messages": [{"role": "user", "content": [{"text": p4}]}]}
    # mock-slow sends a word every 300 ms: the client leaves after the first.
    run.send_and_leave({"status": 200, "decision": "allow", "provider": "azure-openai", "stream": True,
                        "outcome": "client_closed"},
                       f"{azure}/mock-slow/chat/completions?{API}", headers={"api-key": token},
                       json=chat(" ".join(f"word{i}" for i in range(30)), stream=True))
    run.send({"status": 200, "decision": "allow", "provider": "bedrock-claude", "input": words(p4),
              "output": reply_words("Bedrock", p4), "stream": False},
             "POST", f"{bedrock}/converse", headers={"authorization": f"Bearer {token}"}, json=converse,
             verify=state["ca_bundle"])
    run.send({"status": 200, "decision": "allow", "provider": "bedrock-claude", "input": words(p4),
              "output": reply_words("Bedrock", p4), "stream": True},
             "POST", f"{bedrock}/converse-stream", headers={"authorization": f"Bearer {token}"}, json=converse,
             verify=state["ca_bundle"])
    run.send({"status": 401, "decision": "unauthorized", "provider": "azure-openai"},
             "POST", f"{azure}/gpt-4o/chat/completions?{API}", json=chat("no token"))
    run.send({"status": 401, "decision": "unauthorized", "provider": "gemini"},
             "POST", f"{base}/gemini/v1beta/models/gemini-2.0-flash:generateContent?key=not-a-token",
             json={"contents": []})
    run.send({"status": 403, "decision": "deny", "provider": "gemini", "subject": "openai-only"},
             "POST", f"{base}/gemini/v1beta/models/gemini-2.0-flash:generateContent",
             headers={"x-goog-api-key": openai_only_token}, json={"contents": []})
    run.send({"status": 500, "decision": "allow", "provider": "gemini"},
             "POST", f"{base}/gemini/v1beta/models/mock-error-500:generateContent",
             headers={"x-goog-api-key": token}, json={"contents": [{"parts": [{"text": "x"}]}]})
    run.send({"status": 429, "decision": "allow", "provider": "azure-openai"},
             "POST", f"{azure}/mock-error-429/chat/completions?{API}", headers={"api-key": token}, json=chat("x"))
    run.send({"status": 504, "decision": "error", "provider": "azure-openai"},
             "POST", f"{azure}/mock-hang/chat/completions?{API}", headers={"api-key": token}, json=chat("x"),
             timeout=deadline_s + 15)
    events, raw = wait_for_events(state, set(run.expected))
    return run, events, raw, token


def test_exactly_one_final_record_per_request(mixed_run):
    run, events, _, _ = mixed_run
    ours = [e for e in events if e["request_id"] in run.expected]
    for event in ours:
        jsonschema.validate(event, SCHEMA)
    for request_id, expect in run.expected.items():
        records = records_of(ours, request_id)
        assert len(records.get("final", [])) == 1, (expect, records)
        assert "incomplete" not in records, records
        # The authorizer records what it lets through; the route what it relays (the accepted record
        # leaves while the provider works). A request refused by the authorizer has its final only.
        let_through = expect["decision"] in ("allow", "error")
        assert len(records.get("authorized", [])) == (1 if let_through else 0), (expect, records)
        assert len(records.get("accepted", [])) == (1 if let_through else 0), (expect, records)
        for record in records.get("authorized", []) + records.get("accepted", []):
            assert (record["status"], record["outcome"], record["decision"]) == (0, "pending", "allow"), record
            assert record["principal"] == records["final"][0]["principal"], record


def test_events_carry_status_principal_and_usage(mixed_run, all_user, state):
    run, events, _, _ = mixed_run
    run.transports = dict(state["transports"])
    by_id = {e["request_id"]: e for e in events if e["request_id"] in run.expected and is_final(e)}
    for request_id, expect in run.expected.items():
        event = by_id[request_id]
        assert event["status"] == expect["status"], event
        assert event["decision"] == expect["decision"], event
        assert event["provider"] == expect["provider"], event
        if expect["decision"] == "unauthorized":
            assert event["principal"] is None and event["reason"], event
        elif expect.get("subject") == "openai-only":
            assert event["principal"]["subject"] != all_user["sub"], event
            assert "text:gemini" in event["reason"], event
        else:
            assert event["principal"]["subject"] == all_user["sub"], event
            assert event["principal"]["department"] == "engineering", event
        if "outcome" in expect:
            assert event["outcome"] == expect["outcome"] and event["stream"] == expect["stream"], event
            assert 0 < event["bytes_out"], event
        if "input" in expect:
            assert event["outcome"] == "complete" and event["stream"] == expect["stream"], event
            assert event["usage"] == {
                "input_tokens": expect["input"],
                "output_tokens": expect["output"],
                "total_tokens": expect["input"] + expect["output"],
                "cached_input_tokens": 0,
                "cache_write_tokens": 0,
                "estimated": False,
            }, event
            assert event["bytes_in"] > 0 and event["bytes_out"] > 0 and event["request_sha256"], event
            assert event["latency"]["upstream_ms"] is not None, event
        if expect["status"] == 504:
            assert "did not answer" in event["reason"], event
        if expect["decision"] in ("allow", "error"):
            assert event["transport"] == run.transports[event["provider"]], event


def test_no_credential_in_the_bucket(mixed_run, state, openai_only_token):
    _, _, raw, token = mixed_run
    text = raw.decode()
    for secret in [token, openai_only_token, token.split(".")[2], get_secret(state, "azure-openai"),
                   get_secret(state, "gemini"), "not-a-token"]:
        assert secret not in text


def test_no_credential_in_the_gateway_log(mixed_run, state, openai_only_token):
    log = Path(state_path()).parent / "stack.log"
    if not log.exists():
        pytest.skip(f"the stack's log is not at {log} (stack not started by tests/run.sh)")
    text = log.read_text(errors="replace")
    _, _, _, token = mixed_run
    for secret in [token, openai_only_token, get_secret(state, "azure-openai"), get_secret(state, "gemini")]:
        assert secret not in text


def test_sample_audit_event_matches_the_schema():
    sample = json.loads((REPO_ROOT / "events" / "audit-writer.json").read_text())
    for record in sample["Records"]:
        jsonschema.validate(json.loads(record["body"]), SCHEMA)
    broken = json.loads(sample["Records"][0]["body"]) | {"decision": "maybe"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_relayed_requests_bodies_decrypt_to_what_passed(mixed_run, state, tmp_path):
    """Every request the routes relayed has its bodies sealed beside the events; the auditor's command
    gives back exactly the bytes the client sent and received."""
    from test_audit_bodies import run_cli

    run, events, _, _ = mixed_run
    finals = {e["request_id"]: e for e in events if is_final(e) and e["request_id"] in run.expected}
    checked = 0
    for request_id, (sent, received) in run.exchanged.items():
        event = finals[request_id]
        if event["decision"] == "unauthorized" or (event["status"] == 403):
            assert event.get("bodies") is None, "the authorizer refused it: the route never saw a body"
            continue
        if event["operation"] is None:
            continue
        sent = sent.encode() if isinstance(sent, str) else sent
        assert event["bodies"]["key"], event
        result = run_cli(state, "--request-id", request_id, "--out", str(tmp_path))
        assert result.returncode == 0, result.stderr.decode()
        assert (tmp_path / f"{request_id}.request").read_bytes() == sent, request_id
        assert (tmp_path / f"{request_id}.response").read_bytes() == received, request_id
        checked += 1
    assert checked >= 6, f"only {checked} relayed requests were checked"
