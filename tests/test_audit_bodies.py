"""Audit bodies end to end: the stock openai SDK makes a chat completion, a streamed one and one whose
prompt exceeds the bound; after each response the route's flush seals the request and response bodies
into the audit bucket (bodies/year=/month=/day=/hour=/<request id>.json) and the final event references
them. No prompt or reply byte is anywhere in the bucket or the stack's log, and `gateway-audit bodies`
gives back exactly the bytes sent and received (the first max_bytes of each, flagged, past the bound)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import time
from pathlib import Path

import jsonschema
import openai
import pytest

from helpers import HTTP_TIMEOUT, REPO_ROOT, aws_client, state_path, unique_prompt

SCHEMA = json.loads((REPO_ROOT / "schemas" / "audit-event.schema.json").read_text())
API_VERSION = "2024-10-21"


def audit_cli() -> Path:
    """The gateway-audit binary tests/run.sh builds (GATEWAY_AUDIT_BIN, else the default target dir)."""
    explicit = os.environ.get("GATEWAY_AUDIT_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "llm-gateway" / "target"))
    return Path(target) / "debug" / "gateway-audit"


def run_cli(state: dict, *args: str) -> subprocess.CompletedProcess:
    binary = audit_cli()
    if not binary.exists():
        pytest.fail(f"{binary} not built: cargo build -p audit-cli (tests/run.sh does)", pytrace=False)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_ENDPOINT_URL": state["aws_endpoint_url"],
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": state["region"],
        "GATEWAY_AUDIT_BUCKET": state["buckets"]["audit"],
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return subprocess.run([str(binary), "bodies", *args], env=env, capture_output=True, timeout=60)


def bucket_objects(state: dict) -> dict[str, bytes]:
    """Every object in the audit bucket, whatever its prefix: key -> bytes as stored."""
    s3 = aws_client(state, "s3")
    bucket = state["buckets"]["audit"]
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return objects


def final_events(objects: dict[str, bytes]) -> dict[str, dict]:
    finals = {}
    for key, data in objects.items():
        if key.startswith("audit/") and key.endswith(".jsonl.gz"):
            for line in gzip.decompress(data).decode().splitlines():
                event = json.loads(line) if line.strip() else {}
                if event.get("record", "final") == "final":
                    finals[event["request_id"]] = event
    return finals


def wait_for_bodies(state: dict, request_ids: set[str], timeout_s: float = 60) -> tuple[dict, dict]:
    """Polls until each request's final event and its bodies object are in the bucket."""
    deadline = time.monotonic() + timeout_s
    while True:
        objects = bucket_objects(state)
        finals = final_events(objects)
        stored = {rid for rid in request_ids if rid in finals and (finals[rid].get("bodies") or {}).get("key")
                  in objects}
        if stored == request_ids or time.monotonic() > deadline:
            return objects, finals
        time.sleep(0.5)


def leaks(data: bytes, secret: bytes) -> bool:
    """`secret` in `data` as is, gunzipped, or base64-encoded (at any of the three alignments)."""
    candidates = [data]
    if data[:2] == b"\x1f\x8b":
        candidates.append(gzip.decompress(data))
    forms = [secret]
    for shift in range(3):
        encoded = base64.b64encode(secret[shift:])
        forms.append(encoded[4:-4])  # the stable middle, whatever precedes or follows
    return any(form in candidate for candidate in candidates for form in forms)


def streamed_text(raw: bytes) -> str:
    """The reply a chat completion stream spells out, delta by delta."""
    text = ""
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[len("data: "):]).get("choices", []):
                text += (choice.get("delta") or {}).get("content") or ""
    return text


class Exchange:
    """One request as the client saw it: the id, the bytes it sent and the bytes it received."""

    def __init__(self, request_id: str, sent: bytes, received: bytes, marker: str):
        self.request_id, self.sent, self.received, self.marker = request_id, sent, received, marker


@pytest.fixture(scope="module")
def exchanges(state, all_token):
    if not state.get("audit_bodies", {}).get("enabled"):
        pytest.skip("the stack runs with GATEWAY_AUDIT_BODIES=off")
    client = openai.AzureOpenAI(azure_endpoint=f"{state['base_url']}/azure-openai", api_version=API_VERSION,
                                api_key=all_token, max_retries=0, timeout=HTTP_TIMEOUT * 4)
    s3 = aws_client(state, "s3")
    bucket = state["buckets"]["audit"]
    done = {}

    prompt = unique_prompt("bodies-plain")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}])
    assert prompt in raw.parse().choices[0].message.content
    done["plain"] = Exchange(raw.headers["x-gateway-request-id"], raw.http_request.content,
                             raw.http_response.content, prompt)

    # A slow stream (300 ms between chunks): its bodies cannot be stored before its last byte passed.
    prompt = unique_prompt("bodies-stream")
    with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mock-slow", messages=[{"role": "user", "content": prompt}], stream=True,
            stream_options={"include_usage": True}) as response:
        request_id = response.headers["x-gateway-request-id"]
        chunks = response.http_response.iter_raw()
        received = next(chunks)
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="bodies/").get("Contents", [])
        assert not [o for o in listed if request_id in o["Key"]], "bodies stored while the stream still ran"
        received += b"".join(chunks)
        sent = response.http_request.content
    assert prompt in streamed_text(received), received[:500]
    assert received.count(b"data: ") >= 3, "a real stream"
    done["stream"] = Exchange(request_id, sent, received, prompt)

    max_bytes = state["audit_bodies"]["max_bytes"]
    prompt = unique_prompt("bodies-big")
    long_prompt = prompt + " " + "lorem ipsum " * (max_bytes // 12 + 100)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": long_prompt}])
    assert len(raw.http_request.content) > max_bytes and len(raw.http_response.content) > max_bytes
    done["big"] = Exchange(raw.headers["x-gateway-request-id"], raw.http_request.content,
                           raw.http_response.content, prompt)

    objects, finals = wait_for_bodies(state, {e.request_id for e in done.values()})
    return done, objects, finals


def test_each_final_event_references_its_bodies_object(exchanges):
    done, objects, finals = exchanges
    for name, exchange in done.items():
        event = finals.get(exchange.request_id)
        assert event is not None, f"{name}: no final event"
        jsonschema.validate(event, SCHEMA)
        bodies = event["bodies"]
        assert bodies["error"] is None, bodies
        assert bodies["key"].startswith("bodies/year=") and bodies["key"].endswith(f"/{exchange.request_id}.json")
        assert bodies["key"] in objects, bodies
        stored = json.loads(objects[bodies["key"]])
        assert stored["format"] == "llm-gateway-audit-bodies/1" and stored["algorithm"] == "AES-256-GCM"
        assert stored["request_id"] == exchange.request_id and stored["event_id"] == event["event_id"]
        assert stored["encrypted_data_key"], stored
        big = name == "big"
        assert bodies["request"]["truncated"] is big and bodies["response"]["truncated"] is big, bodies
        if not big:
            assert bodies["request"]["bytes"] == len(exchange.sent) == event["bytes_in"], bodies
            assert bodies["response"]["bytes"] == len(exchange.received) == event["bytes_out"], bodies


def test_the_bodies_key_is_the_stacks(exchanges, state):
    _, objects, _ = exchanges
    stored = [json.loads(data) for key, data in objects.items() if key.startswith("bodies/")]
    assert stored
    assert {o["key_id"] for o in stored} == {state["keys"]["audit_bodies"]}


def test_accepted_records_carry_no_bodies(exchanges):
    done, objects, _ = exchanges
    ids = {e.request_id for e in done.values()}
    for key, data in objects.items():
        if key.startswith("audit/"):
            for line in gzip.decompress(data).decode().splitlines():
                event = json.loads(line)
                if event["request_id"] in ids and event.get("record") != "final":
                    assert event.get("bodies") is None, event


def test_no_prompt_or_reply_byte_anywhere_in_the_bucket_or_the_log(exchanges, state):
    done, _, _ = exchanges
    objects = bucket_objects(state)  # everything, once more: every object under every prefix
    assert any(key.startswith("bodies/") for key in objects)
    log = Path(state_path()).parent / "stack.log"
    log_bytes = log.read_bytes() if log.exists() else b""
    for exchange in done.values():
        # The prompt's unique word: in the request, and echoed in every reply (a stream's included).
        unique = exchange.marker.split()[3].encode()
        assert unique in exchange.sent and unique in exchange.received
        for secret in (unique, exchange.marker.encode()):
            for key, data in objects.items():
                assert not leaks(data, secret), f"{secret!r} in s3://{state['buckets']['audit']}/{key}"
            assert secret not in log_bytes, f"{secret!r} in the stack's log"


@pytest.mark.parametrize("name", ["plain", "stream"])
def test_the_auditor_gets_back_exactly_the_bytes_sent_and_received(exchanges, state, tmp_path, name):
    done, _, _ = exchanges
    exchange = done[name]
    result = run_cli(state, "--request-id", exchange.request_id, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["authenticated"] is True
    assert summary["request"]["truncated"] is False and summary["response"]["truncated"] is False
    assert (tmp_path / f"{exchange.request_id}.request").read_bytes() == exchange.sent
    assert (tmp_path / f"{exchange.request_id}.response").read_bytes() == exchange.received


def test_past_the_bound_the_auditor_gets_the_first_bytes_flagged_truncated(exchanges, state, tmp_path):
    done, _, finals = exchanges
    exchange = done["big"]
    max_bytes = state["audit_bodies"]["max_bytes"]
    hour = finals[exchange.request_id]["time"][:13]
    result = run_cli(state, "--request-id", exchange.request_id, "--hour", hour, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["request"] == {"bytes": max_bytes, "truncated": True,
                                  "file": str(tmp_path / f"{exchange.request_id}.request")}
    assert summary["response"]["truncated"] is True
    assert (tmp_path / f"{exchange.request_id}.request").read_bytes() == exchange.sent[:max_bytes]
    assert (tmp_path / f"{exchange.request_id}.response").read_bytes() == exchange.received[:max_bytes]


def flip_last_byte(encoded: str) -> str:
    data = bytearray(base64.b64decode(encoded))
    data[-1] ^= 0x01
    return base64.b64encode(bytes(data)).decode()


@pytest.mark.parametrize("field", ["response ciphertext", "request nonce", "encrypted_data_key"])
def test_a_tampered_object_fails_authentication_loudly(exchanges, state, field):
    done, objects, finals = exchanges
    exchange = done["plain"]
    key = finals[exchange.request_id]["bodies"]["key"]
    stored = json.loads(objects[key])
    if field == "encrypted_data_key":
        stored[field] = flip_last_byte(stored[field])
    else:
        part, name = field.split()
        stored[part][name] = flip_last_byte(stored[part][name])
    # The altered copy goes to another bucket: the audit bucket is write-once and stays untouched.
    s3 = aws_client(state, "s3")
    scratch = state["buckets"]["payloads"]
    s3.put_object(Bucket=scratch, Key=key, Body=json.dumps(stored).encode())
    try:
        result = run_cli(state, "--request-id", exchange.request_id, "--key", key, "--bucket", scratch)
    finally:
        s3.delete_object(Bucket=scratch, Key=key)
    assert result.returncode == 4, (result.returncode, result.stderr)
    assert b"AUTHENTICATION FAILED" in result.stderr, result.stderr
    if field != "encrypted_data_key":
        assert field.split()[0].encode() in result.stderr, result.stderr
    assert result.stdout == b"", "nothing is printed from an object that fails authentication"


def test_an_unknown_request_is_reported_not_found(exchanges, state):
    result = run_cli(state, "--request-id", "no-such-request")
    assert result.returncode == 1
    assert b"no bodies object for request no-such-request" in result.stderr
