"""Tamper evidence and incomplete records of the audit trail, end to end.

Traffic through the stock SDK, the audit queue drained, then the hourly digest job run through the local
stack's control endpoint (`POST /_local/audit-digest?through=<hour>`, closing the current hour early) and
`gateway-audit verify` run over the digested range. Each kind of tampering (a new version of an object, a
deleted object, an object moved to another hour, an edited digest, swapped digests, a deleted digest) must
make verify report it, with its key, and exit non-zero; each test then restores what it changed (a new
version with the original bytes: Object Lock keeps every version) and verify passes again.

A request with an `accepted` record but no final (an accepted record put on the audit queue by the test,
as if the route's sandbox had died) gets exactly one `incomplete` record from the job, and none more on
a rerun.

The binary: $GATEWAY_AUDIT_BIN, else `gateway-audit` beside $GATEWAY_LOCAL_BIN (tests/run.sh builds both),
else $CARGO_TARGET_DIR/debug/gateway-audit.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import botocore.exceptions
import jsonschema
import openai
import pytest
import requests

from helpers import HTTP_TIMEOUT, REPO_ROOT, aws_client

API_VERSION = "2024-10-21"
# The job checks an hour for missing finals when it digests the hour GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS
# + GATEWAY_AUDIT_DIGEST_GRACE_SECS (900 + 600 by default, as tests/run.sh leaves them) rounded up to
# whole hours later.
LAG_HOURS = 1
SCHEMA = json.loads((REPO_ROOT / "schemas" / "audit-event.schema.json").read_text())


def audit_binary() -> Path:
    candidates = [os.environ.get("GATEWAY_AUDIT_BIN")]
    if os.environ.get("GATEWAY_LOCAL_BIN"):
        candidates.append(str(Path(os.environ["GATEWAY_LOCAL_BIN"]).parent / "gateway-audit"))
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/llm-gateway/target")
    candidates.append(f"{target}/debug/gateway-audit")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("no gateway-audit binary: set GATEWAY_AUDIT_BIN, or build it (tests/run.sh does)")


def hour_text(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H")


def partition(hour: str) -> str:
    at = datetime.strptime(hour, "%Y-%m-%dT%H")
    return at.strftime("year=%Y/month=%m/day=%d/hour=%H")


def digest_key(hour: str) -> str:
    return f"digests/{partition(hour)}.json"


class Trail:
    """The audit bucket, the digest job and the verify command of the running stack."""

    def __init__(self, state: dict):
        self.state = state
        self.bucket = state["buckets"]["audit"]
        self.s3 = aws_client(state, "s3")
        self.binary = audit_binary()

    def run_digest(self, through: str) -> dict:
        resp = requests.post(
            f"{self.state['control_url']}/_local/audit-digest",
            params={"through": through},
            timeout=HTTP_TIMEOUT,
        )
        assert resp.status_code == 200, resp.text
        return resp.json()

    def verify(self, first: str, last: str) -> tuple[int, list[tuple[str, str, str]], str]:
        """Runs `gateway-audit verify`; returns its exit code, its findings (kind, key, detail), its output."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GATEWAY_AUDIT"))}
        env.update(
            AWS_ENDPOINT_URL=self.state["aws_endpoint_url"],
            AWS_REGION=self.state["region"],
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_EC2_METADATA_DISABLED="true",
            GATEWAY_AUDIT_BUCKET=self.bucket,
            GATEWAY_AUDIT_DIGEST_KEY_ID=self.state["keys"]["audit_digest"],
        )
        run = subprocess.run(
            [str(self.binary), "verify", "--from", first, "--to", last],
            env=env, capture_output=True, text=True, timeout=120,
        )
        lines = run.stdout.strip().splitlines()
        assert lines, f"verify printed nothing; stderr: {run.stderr}"
        assert lines[-1].startswith(("intact:", "NOT INTACT:")), run.stdout + run.stderr
        findings = [tuple(line.split("\t", 2)) for line in lines[:-1]]
        assert all(len(f) == 3 for f in findings), run.stdout
        return run.returncode, findings, run.stdout + run.stderr

    def current_keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def get(self, key: str) -> tuple[bytes, dict]:
        obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        return obj["Body"].read(), {k.lower(): v for k, v in obj["Metadata"].items()}

    def put(self, key: str, body: bytes, metadata: dict | None = None) -> None:
        # The bucket's Object Lock default retention takes no put without a checksum.
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=metadata or {},
                           ChecksumAlgorithm="SHA256")

    def delete(self, key: str) -> None:
        """A delete marker: the locked versions stay."""
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def events(self) -> list[dict]:
        events = []
        for key in self.current_keys("audit/"):
            body, _ = self.get(key)
            events.extend(json.loads(line) for line in gzip.decompress(body).decode().splitlines() if line)
        return events

    def wait_for_quiet_queue(self, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
        """Until the audit queue has been empty (nothing waiting, nothing in flight) for `quiet_s`."""
        sqs = aws_client(self.state, "sqs")
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        deadline, quiet_since = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            attributes = sqs.get_queue_attributes(QueueUrl=self.state["queues"]["audit"], AttributeNames=names)
            busy = sum(int(attributes["Attributes"][name]) for name in names)
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(0.3)
        pytest.fail("the audit queue did not drain")


@pytest.fixture(scope="module")
def trail(state, all_token):
    """Traffic and a lost final, written to S3 and digested through the hour after the current one."""
    trail = Trail(state)
    client = openai.AzureOpenAI(azure_endpoint=f"{state['base_url']}/azure-openai", api_version=API_VERSION,
                                api_key=all_token, max_retries=0, timeout=HTTP_TIMEOUT)
    messages = [{"role": "user", "content": "integrity run"}]
    finished = []
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages)
    raw.parse()
    finished.append(raw.headers["x-amzn-requestid"])
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, stream=True)
    for _ in raw.parse():
        pass
    finished.append(raw.headers["x-amzn-requestid"])
    refused = requests.post(f"{state['base_url']}/azure-openai/openai/deployments/gpt-4o/chat/completions",
                            params={"api-version": API_VERSION}, json={"messages": messages}, timeout=HTTP_TIMEOUT)
    assert refused.status_code == 401
    finished.append(refused.headers["x-amzn-requestid"])

    def wait_for(predicate, what: str) -> list[dict]:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            events = trail.events()
            if predicate(events):
                return events
            time.sleep(0.5)
        pytest.fail(f"audit events did not arrive: {what}")

    events = wait_for(lambda evs: set(finished) <= {e["request_id"] for e in evs if e["record"] == "final"},
                      "finals of the traffic")
    # A request whose route died after its accepted record: the record as the route sends it, under a new
    # request id, put on the audit queue directly.
    accepted = next(e for e in events if e["request_id"] == finished[0] and e["record"] == "accepted")
    lost = f"integrity-lost-{uuid.uuid4().hex[:12]}"
    accepted = accepted | {"request_id": lost, "event_id": str(uuid.uuid4())}
    aws_client(state, "sqs").send_message(QueueUrl=state["queues"]["audit"], MessageBody=json.dumps(accepted))
    wait_for(lambda evs: any(e["request_id"] == lost for e in evs), "the lost request's accepted record")
    trail.wait_for_quiet_queue()

    now = datetime.now(timezone.utc)
    trail.through = hour_text(now + timedelta(hours=LAG_HOURS))
    trail.summary = trail.run_digest(trail.through)
    digests = sorted(trail.current_keys("digests/"))
    assert digests, trail.summary
    trail.first = datetime.strptime(digests[0], "digests/year=%Y/month=%m/day=%d/hour=%H.json").strftime(
        "%Y-%m-%dT%H")
    trail.hours = [trail.first]
    while trail.hours[-1] != trail.through:
        nxt = datetime.strptime(trail.hours[-1], "%Y-%m-%dT%H") + timedelta(hours=1)
        trail.hours.append(hour_text(nxt))
    trail.finished, trail.lost = finished, lost
    trail.traffic_key = traffic_object(trail)
    trail.traffic_hour = datetime.strptime(
        trail.traffic_key.split("/", 1)[1].rsplit("/", 1)[0], "year=%Y/month=%m/day=%d/hour=%H"
    ).strftime("%Y-%m-%dT%H")
    return trail


def assert_intact(trail: Trail) -> None:
    code, findings, output = trail.verify(trail.first, trail.through)
    assert code == 0 and not findings, output
    assert output.startswith("intact:"), output


def assert_reported(trail: Trail, kind: str, key: str, first: str | None = None) -> list:
    code, findings, output = trail.verify(first or trail.first, trail.through)
    print(output)  # shown with -s, and by pytest on a failure
    assert code == 1, output
    assert (kind, key) in [(k, where) for k, where, _ in findings], output
    return findings


def traffic_object(trail: Trail) -> str:
    """An audit object holding a final of this module's traffic."""
    for key in trail.current_keys("audit/"):
        body, _ = trail.get(key)
        if trail.finished[0].encode() in gzip.decompress(body):
            return key
    pytest.fail("no audit object of the traffic found")


def test_an_untouched_range_verifies(trail):
    assert trail.through in trail.summary["digested"], trail.summary
    assert_intact(trail)


def test_audit_objects_and_digests_are_locked_in_compliance_mode(trail):
    for key in (trail.traffic_key, digest_key(trail.traffic_hour)):
        head = trail.s3.head_object(Bucket=trail.bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE", (key, head)
        assert head["ObjectLockRetainUntilDate"] > datetime.now(timezone.utc), (key, head)
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            trail.s3.delete_object(Bucket=trail.bucket, Key=key, VersionId=head["VersionId"])
        assert refused.value.response["Error"]["Code"] == "AccessDenied", refused.value.response


def test_a_request_without_final_gets_exactly_one_incomplete_record(trail):
    def outcomes(request_id: str) -> list[dict]:
        return [e for e in trail.events()
                if e["request_id"] == request_id and e["record"] in ("final", "incomplete")]

    lost = outcomes(trail.lost)
    assert len(lost) == 1, lost
    assert lost[0]["record"] == "incomplete" and lost[0]["outcome"] == "unknown", lost
    assert lost[0]["decision"] == "allow" and lost[0]["status"] == 0, lost
    assert "seen: accepted" in lost[0]["reason"], lost
    jsonschema.validate(lost[0], SCHEMA)
    for request_id in trail.finished:
        assert [e["record"] for e in outcomes(request_id)] == ["final"], request_id
    again = trail.run_digest(trail.through)
    assert again["digested"] == [] and again["incomplete"] == {}, again
    assert len(outcomes(trail.lost)) == 1
    assert_intact(trail)


def test_a_new_version_of_an_object_is_reported_altered(trail):
    key = trail.traffic_key
    original, _ = trail.get(key)
    trail.put(key, gzip.compress(b'{"forged": true}\n'))
    try:
        assert_reported(trail, "altered-object", key)
    finally:
        trail.put(key, original)
    assert_intact(trail)


def test_a_deleted_object_is_reported_missing(trail):
    key = trail.traffic_key
    original, _ = trail.get(key)
    trail.delete(key)
    try:
        assert_reported(trail, "missing-object", key)
    finally:
        trail.put(key, original)
    assert_intact(trail)


def test_an_object_moved_to_another_hour_is_reported(trail):
    key = trail.traffic_key
    original, _ = trail.get(key)
    other_hour = next(h for h in reversed(trail.hours) if h != trail.traffic_hour)
    moved = key.replace(partition(trail.traffic_hour), partition(other_hour))
    trail.put(moved, original)
    trail.delete(key)
    try:
        findings = assert_reported(trail, "moved-object", moved)
        assert key in next(detail for kind, where, detail in findings if where == moved)
    finally:
        trail.put(key, original)
        trail.delete(moved)
    assert_intact(trail)


def test_an_edited_digest_fails_its_signature(trail):
    key = digest_key(trail.traffic_hour)
    original, metadata = trail.get(key)
    document = json.loads(original)
    document["objects"] = document["objects"][:-1]
    trail.put(key, json.dumps(document, separators=(",", ":")).encode(), metadata)
    try:
        assert_reported(trail, "bad-signature", key)
    finally:
        trail.put(key, original, metadata)
    assert_intact(trail)


def test_swapped_digests_break_the_chain(trail):
    first, second = digest_key(trail.hours[-2]), digest_key(trail.hours[-1])
    a, a_meta = trail.get(first)
    b, b_meta = trail.get(second)
    trail.put(first, b, b_meta)
    trail.put(second, a, a_meta)
    try:
        findings = assert_reported(trail, "misplaced-digest", first)
        assert ("misplaced-digest", second) in [(k, where) for k, where, _ in findings], findings
    finally:
        trail.put(first, a, a_meta)
        trail.put(second, b, b_meta)
    assert_intact(trail)


def test_a_deleted_digest_is_missing_and_breaks_the_next_link(trail):
    gone = digest_key(trail.hours[-2])
    original, metadata = trail.get(gone)
    trail.delete(gone)
    try:
        assert_reported(trail, "missing-digest", gone)
        # Verified from the next hour on, the chain's first link points at nothing.
        assert_reported(trail, "broken-chain", digest_key(trail.hours[-1]), first=trail.hours[-1])
    finally:
        trail.put(gone, original, metadata)
    assert_intact(trail)
