"""Shared helpers for the end-to-end suite.

Everything here talks to the *running* local stack described by the state
file that tests/run.sh (or local/run.sh) writes. Nothing here starts or stops
processes.
"""

from __future__ import annotations

import base64
import glob
import gzip
import hashlib
import hmac
import importlib.util
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs, unquote

import boto3
import botocore.config
import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

import stack_state
from stack_state import StackState

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_ENV = "GATEWAY_LOCAL_STATE"
STACK_HINT = "start the stack with ./local/run.sh or run ./tests/run.sh"

# Dummy credentials for moto (never real AWS).
MOTO_ACCESS_KEY = "test"
MOTO_SECRET_KEY = "test"

STRONG_PASSWORD = "Str0ng!Passw0rd"

HTTP_TIMEOUT = 30  # seconds, for every direct HTTP call made by the suite

# Keys of state["mocks"] / state["upstreams"] / state["secrets"] / state["queues"]["requests"]: each
# provider's one spelling, its route prefix (as in audit events).
AZURE = "azure-openai"
BEDROCK = "bedrock-claude"
GEMINI = "gemini"


# --------------------------------------------------------------------------
# State file
# --------------------------------------------------------------------------


def state_path() -> Path:
    override = os.environ.get(STATE_ENV)
    if override:
        return Path(override)
    return REPO_ROOT / ".local" / "stack.json"


def load_state() -> StackState:
    """The stack state file, checked against its type (tests/stack_state.py, the twin of
    local/src/state.rs); raises FileNotFoundError, or ValueError naming what differs."""
    return stack_state.load(state_path())


# --------------------------------------------------------------------------
# AWS (moto) access
# --------------------------------------------------------------------------


def aws_client(state: dict, service: str):
    """A boto3 client for the local moto server, with dummy credentials."""
    session = boto3.session.Session(
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
        region_name=state["region"],
    )
    return session.client(
        service,
        endpoint_url=state["aws_endpoint_url"],
        config=botocore.config.Config(
            retries={"total_max_attempts": 2, "mode": "standard"},
            connect_timeout=10,
            read_timeout=HTTP_TIMEOUT,
        ),
    )


def get_secret(state: dict, provider: str) -> str:
    """The upstream credential the gateway must inject for `provider`."""
    sm = aws_client(state, "secretsmanager")
    return sm.get_secret_value(SecretId=state["secrets"][provider])["SecretString"]


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _secret_hash(username: str, client_id: str, client_secret: str) -> str:
    digest = hmac.new(
        client_secret.encode(), (username + client_id).encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def create_cognito_user(state: dict, groups: Iterable[str], password: str = STRONG_PASSWORD) -> dict:
    """Create a confirmed Cognito user in the stack's pool and log it in.

    Returns {"username", "password", "groups", "access_token", "id_token", "sub"}.
    """
    idp = aws_client(state, "cognito-idp")
    pool = state["user_pool_id"]
    client_id = state["app_client_id"]
    username = unique_name("e2e")
    groups = list(groups)

    idp.admin_create_user(
        UserPoolId=pool,
        Username=username,
        MessageAction="SUPPRESS",
        TemporaryPassword=password,
    )
    idp.admin_set_user_password(
        UserPoolId=pool, Username=username, Password=password, Permanent=True
    )
    for group in groups:
        idp.admin_add_user_to_group(UserPoolId=pool, Username=username, GroupName=group)

    auth_params = {"USERNAME": username, "PASSWORD": password}
    app_client = idp.describe_user_pool_client(UserPoolId=pool, ClientId=client_id)
    client_secret = app_client.get("UserPoolClient", {}).get("ClientSecret")
    if client_secret:
        auth_params["SECRET_HASH"] = _secret_hash(username, client_id, client_secret)

    resp = idp.admin_initiate_auth(
        UserPoolId=pool,
        ClientId=client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters=auth_params,
    )
    result = resp.get("AuthenticationResult")
    assert result, f"admin_initiate_auth returned no tokens (challenge?): {resp.get('ChallengeName')}"
    return {
        "username": username,
        "password": password,
        "groups": groups,
        "access_token": result["AccessToken"],
        "id_token": result["IdToken"],
        "sub": unverified_claims(result["AccessToken"])["sub"],
    }


def delete_cognito_user(state: dict, username: str) -> None:
    try:
        aws_client(state, "cognito-idp").admin_delete_user(
            UserPoolId=state["user_pool_id"], Username=username
        )
    except Exception:  # best effort; the stack is throwaway
        pass


# --------------------------------------------------------------------------
# The audit trail (gzip JSONL objects in the audit bucket)
# --------------------------------------------------------------------------


def audit_schema() -> dict:
    """The audit event's JSON Schema."""
    return json.loads((REPO_ROOT / "schemas" / "audit-event.schema.json").read_text(encoding="utf-8"))


def mail_to(state: dict, address: str) -> list[dict]:
    """The mail SES accepted for `address` (the local moto keeps it: `identity.mail_messages_url`)."""
    sent = requests.get(state["identity"]["mail_messages_url"], timeout=HTTP_TIMEOUT).json()
    return [m for m in sent if address in (m.get("destinations") or {}).get("ToAddresses", [])]


# Audit objects already read, by (bucket, key, ETag): an object's bytes never change under one ETag,
# so the suite's many reads of a growing trail fetch each object once.
_AUDIT_OBJECTS: dict[tuple[str, str, str], tuple[list[dict], bytes]] = {}


def audit_events(state: dict) -> tuple[list[dict], bytes]:
    """Every event in the audit bucket, and all object bytes (decompressed) for leak checks."""
    s3 = aws_client(state, "s3")
    bucket = state["buckets"]["audit"]
    events, raw = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="audit/"):
        for obj in page.get("Contents", []):
            assert obj["Key"].endswith(".jsonl.gz"), obj["Key"]
            assert "/year=" in obj["Key"] and "/hour=" in obj["Key"], obj["Key"]
            cache_key = (bucket, obj["Key"], obj["ETag"])
            if cache_key not in _AUDIT_OBJECTS:
                data = gzip.decompress(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                parsed = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
                _AUDIT_OBJECTS[cache_key] = (parsed, data)
            parsed, data = _AUDIT_OBJECTS[cache_key]
            raw.append(data)
            events.extend(parsed)
    return events, b"".join(raw)


def is_final(event: dict) -> bool:
    """A request's one outcome (schema 1 events, before records existed, are all finals)."""
    return event.get("record", "final") == "final"


def records_of(events: list[dict], request_id: str) -> dict[str, list[dict]]:
    """A request's records by kind: authorized, accepted, final, incomplete."""
    found: dict[str, list[dict]] = {}
    for event in events:
        if event["request_id"] == request_id:
            found.setdefault(event.get("record", "final"), []).append(event)
    return found


def wait_for_events(state: dict, request_ids: set[str], timeout_s: float = 45) -> tuple[list[dict], bytes]:
    """The audit bucket's records (and bytes) once every one of `request_ids` has its final record, or at
    the timeout. The final is the last record a request gets: its authorized and accepted records leave
    first."""
    deadline = time.monotonic() + timeout_s
    while True:
        events, raw = audit_events(state)
        seen = {e["request_id"] for e in events if is_final(e)}
        if request_ids <= seen or time.monotonic() > deadline:
            return events, raw
        time.sleep(0.5)


# --------------------------------------------------------------------------
# Mock providers' request journal
# --------------------------------------------------------------------------


def mock_url(state: dict, provider: str) -> str:
    return state["mocks"][provider].rstrip("/")


def mock_requests(state: dict, provider: str) -> list[dict]:
    """Every request the provider mock received since the last clear."""
    resp = requests.get(f"{mock_url(state, provider)}/_mock/requests", timeout=HTTP_TIMEOUT)
    resp.raise_for_status()
    records = resp.json()
    assert isinstance(records, list), f"unexpected journal shape from {provider} mock: {records!r}"
    return records


def clear_mock(state: dict, provider: str) -> None:
    resp = requests.delete(f"{mock_url(state, provider)}/_mock/requests", timeout=HTTP_TIMEOUT)
    resp.raise_for_status()
    assert mock_requests(state, provider) == [], f"{provider} mock journal did not clear"


def requests_to(state: dict, provider: str, path_suffix: str) -> list[dict]:
    """Recorded requests whose raw path ends with `path_suffix`."""
    return [r for r in mock_requests(state, provider) if r["path"].endswith(path_suffix)]


def single_request(state: dict, provider: str, path_suffix: str) -> dict:
    """The one request forwarded upstream for `path_suffix` (after a clear)."""
    all_records = mock_requests(state, provider)
    matching = [r for r in all_records if r["path"].endswith(path_suffix)]
    summary = [(r.get("method"), r.get("path"), r.get("query")) for r in all_records]
    assert len(matching) == 1, (
        f"expected exactly one upstream request to {provider} ending in {path_suffix!r}, "
        f"got {len(matching)}; journal: {summary}"
    )
    return matching[0]


def header(record: dict, name: str) -> str | None:
    """Header value from a recorded request (names are lowercase in the journal)."""
    headers = {k.lower(): v for k, v in (record.get("headers") or {}).items()}
    value = headers.get(name.lower())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def header_values(record: dict) -> list[str]:
    out = []
    for value in (record.get("headers") or {}).values():
        if isinstance(value, list):
            out.extend(str(v) for v in value)
        else:
            out.append(str(value))
    return out


def query_params(record: dict) -> dict[str, list[str]]:
    return parse_qs(record.get("query") or "", keep_blank_values=True)


def assert_no_client_credential(record: dict, token: str) -> None:
    """The gateway token must not reach the provider: no header, query or path."""
    assert token, "empty token given to assert_no_client_credential"
    for name, value in (record.get("headers") or {}).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            assert token not in str(v), f"client token leaked upstream in header {name!r}"
    raw_query = record.get("query") or ""
    assert token not in raw_query and token not in unquote(raw_query), (
        "client token leaked upstream in the query string"
    )
    raw_path = record.get("path") or ""
    assert token not in raw_path and token not in unquote(raw_path), (
        "client token leaked upstream in the path"
    )
    # A JWT's signature alone is also a secret; check it separately in case
    # the gateway re-encoded the token somehow.
    parts = token.split(".")
    if len(parts) == 3 and len(parts[2]) >= 16:
        blob = " ".join(header_values(record)) + " " + raw_query
        assert parts[2] not in blob, "client token signature leaked upstream"


REQUEST_ID_RE = re.compile(r"request[ _-]?id", re.IGNORECASE)


def assert_mentions_request_id(*texts: Any) -> None:
    blob = " ".join(str(t) for t in texts if t is not None)
    assert REQUEST_ID_RE.search(blob), f"error body should carry a request id, got: {blob[:500]}"


def request_id_headers(headers: Any) -> dict[str, str]:
    """Response headers that look like a request/correlation id."""
    return {
        k: v
        for k, v in dict(headers).items()
        if re.search(r"request-?id", k, re.IGNORECASE) and v
    }


def unique_prompt(tag: str) -> str:
    """A prompt with a unique marker so the echo proves a real round trip."""
    return f"Please echo marker {tag}{uuid.uuid4().hex[:10]} back to me"


# --------------------------------------------------------------------------
# JWT crafting (negative auth tests)
# --------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unverified_claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def unverified_header(token: str) -> dict:
    return jwt.get_unverified_header(token)


def _moto_jwk_candidates() -> list[Path]:
    rel = Path("cognitoidp") / "resources"
    found: list[Path] = []
    spec = importlib.util.find_spec("moto")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            found.append(Path(loc) / rel)
    for site in glob.glob(str(REPO_ROOT / ".venv" / "lib" / "python*" / "site-packages")):
        found.append(Path(site) / "moto" / rel)
    return found


def moto_private_jwk() -> dict:
    """moto's fixed Cognito signing key (kid "dummy"), shipped inside moto."""
    tried = []
    for base in _moto_jwk_candidates():
        plain = base / "jwks-private.json"
        packed = base / "jwks-private.json.gz"
        if packed.is_file():
            return json.loads(gzip.decompress(packed.read_bytes()))
        if plain.is_file():
            return json.loads(plain.read_text(encoding="utf-8"))
        tried.extend([str(plain), str(packed)])
    raise FileNotFoundError(f"moto's jwks-private.json not found; tried {tried}")


def sign_with_moto_key(claims: dict, kid: str | None = None) -> str:
    jwk = moto_private_jwk()
    key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid or jwk.get("kid", "dummy")})


def sign_with_foreign_key(claims: dict, kid: str = "dummy") -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def alg_none_token(claims: dict) -> str:
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}."


def expired_claims(claims: dict) -> dict:
    now = int(time.time())
    out = dict(claims)
    out["iat"] = now - 7200
    out["auth_time"] = now - 7200
    out["exp"] = now - 3600
    return out


# --------------------------------------------------------------------------
# Bedrock client with a bearer token (no AWS credentials at all)
# --------------------------------------------------------------------------

BEDROCK_TOKEN_ENV = "AWS_BEARER_TOKEN_BEDROCK"
_AWS_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def bedrock_runtime_client(state: dict, token: str, monkeypatch, tmp_path: Path):
    """boto3 bedrock-runtime client pointed at the gateway's HTTPS listener.

    Authenticates only with AWS_BEARER_TOKEN_BEDROCK: every other AWS
    credential source is removed from the environment, so if botocore fell
    back to SigV4 the call would fail with NoCredentialsError instead of
    silently succeeding.
    """
    for name in _AWS_CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv(BEDROCK_TOKEN_ENV, token)
    session = boto3.session.Session(region_name=state["region"])
    return session.client(
        "bedrock-runtime",
        endpoint_url=state["https_base_url"].rstrip("/") + "/bedrock-claude",
        verify=state["ca_bundle"],
        region_name=state["region"],
        config=botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=10,
            read_timeout=HTTP_TIMEOUT,
        ),
    )


# --------------------------------------------------------------------------
# The admin API (schemas/admin-api.openapi.yaml; notes: identity contract, "Admin API")
# --------------------------------------------------------------------------

ADMIN_DOCUMENT = REPO_ROOT / "schemas" / "admin-api.openapi.yaml"
# Cognito groups of the admin scopes (policy/scopes.json): the write scopes (admin:users, admin:apikeys,
# admin:billing) and their read scopes.
ADMIN_GROUP = "gateway-admins"
ADMIN_READER_GROUP = "gateway-admin-readers"
# Appendix 2's columns: the HR file's header and the CSV download's.
APPENDIX_2_HEADER = "user_id,name,email,department,job_title,phone,start_date,end_date,status"
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def admin_url(state: dict) -> str:
    return state["base_url"].rstrip("/") + "/admin"


def admin_call(state: dict, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
    """One admin API request (`path` below /admin), with the bearer token when one is given."""
    headers = dict(kwargs.pop("headers", None) or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    kwargs.setdefault("timeout", HTTP_TIMEOUT)
    return requests.request(method, admin_url(state) + path, headers=headers, **kwargs)


def unique_digits(n: int = 9) -> str:
    """n random decimal digits: a run's tag for user ids that reruns do not collide with."""
    return f"{uuid.uuid4().int % 10**n:0{n}d}"


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp (asserting the form)."""
    from datetime import datetime

    assert isinstance(text, str) and RFC3339_RE.match(text), f"not an RFC 3339 timestamp: {text!r}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def sign_in(state: dict, username: str, password: str = STRONG_PASSWORD) -> dict:
    """Signs an existing, confirmed user in (as create_cognito_user does): {"access_token", "id_token", "sub"}."""
    idp = aws_client(state, "cognito-idp")
    pool, client_id = state["user_pool_id"], state["app_client_id"]
    auth_params = {"USERNAME": username, "PASSWORD": password}
    app_client = idp.describe_user_pool_client(UserPoolId=pool, ClientId=client_id)
    client_secret = app_client.get("UserPoolClient", {}).get("ClientSecret")
    if client_secret:
        auth_params["SECRET_HASH"] = _secret_hash(username, client_id, client_secret)
    resp = idp.admin_initiate_auth(
        UserPoolId=pool, ClientId=client_id, AuthFlow="ADMIN_USER_PASSWORD_AUTH", AuthParameters=auth_params
    )
    result = resp.get("AuthenticationResult")
    assert result, f"admin_initiate_auth returned no tokens (challenge?): {resp.get('ChallengeName')}"
    return {
        "access_token": result["AccessToken"],
        "id_token": result["IdToken"],
        "sub": unverified_claims(result["AccessToken"])["sub"],
    }


def confirm_cognito_user(state: dict, username: str, password: str = STRONG_PASSWORD) -> None:
    """What a user's first sign-in with the temporary password does: a permanent password (CONFIRMED)."""
    aws_client(state, "cognito-idp").admin_set_user_password(
        UserPoolId=state["user_pool_id"], Username=username, Password=password, Permanent=True
    )


def add_to_groups(state: dict, username: str, groups: Iterable[str]) -> None:
    idp = aws_client(state, "cognito-idp")
    for group in groups:
        idp.admin_add_user_to_group(UserPoolId=state["user_pool_id"], Username=username, GroupName=group)


def cognito_user(state: dict, username: str) -> dict | None:
    """The pool's view of a user: {"enabled", "status", "attributes", "groups"}, or None."""
    idp = aws_client(state, "cognito-idp")
    try:
        found = idp.admin_get_user(UserPoolId=state["user_pool_id"], Username=username)
    except idp.exceptions.UserNotFoundException:
        return None
    groups = idp.admin_list_groups_for_user(UserPoolId=state["user_pool_id"], Username=username)["Groups"]
    return {
        "enabled": found["Enabled"],
        "status": found["UserStatus"],
        "attributes": {a["Name"]: a["Value"] for a in found["UserAttributes"]},
        "groups": sorted(g["GroupName"] for g in groups),
    }


def admin_document() -> dict:
    """The admin API's OpenAPI document."""
    import yaml

    return yaml.safe_load(ADMIN_DOCUMENT.read_text(encoding="utf-8"))


_ADMIN_VALIDATORS: dict[str, Any] = {}


def admin_schema_errors(name: str, value: Any) -> list[str]:
    """Where `value` breaks the admin document's component schema `name` (empty: it conforms)."""
    import jsonschema

    validator = _ADMIN_VALIDATORS.get(name)
    if validator is None:
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": f"#/components/schemas/{name}",
            "components": admin_document()["components"],
        }
        validator = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        _ADMIN_VALIDATORS[name] = validator
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)]


def provisioning_encrypt(state: dict, plaintext: bytes) -> bytes:
    """An HR file age-encrypted to the stack's provisioning recipient."""
    import pyrage

    recipient = pyrage.x25519.Recipient.from_str(state["provisioning"]["recipient"])
    return pyrage.encrypt(plaintext, [recipient])


def wait_for_provisioning_report(state: dict, source_key: str, timeout_s: float = 30) -> tuple[str, dict]:
    """The report key and JSON report of the provisioning run of `source_key` (reports are named
    `reports/provisioning/<millis>-<the source key's last part>.json`); fails at the timeout."""
    import pytest

    s3 = aws_client(state, "s3")
    bucket = state["provisioning"]["reports_bucket"]
    suffix = "-" + source_key.rsplit("/", 1)[-1] + ".json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="reports/provisioning/"):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith(suffix):
                    report = json.loads(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                    if report.get("source_key") == source_key:
                        return obj["Key"], report
        time.sleep(0.3)
    pytest.fail(f"no provisioning report for {source_key} within {timeout_s} s")


def wait_for_audit(state: dict, found, timeout_s: float = 45) -> tuple[list[dict], bytes]:
    """The audit bucket's events (and bytes) once `found(events)` is true, or at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        events, raw = audit_events(state)
        if found(events) or time.monotonic() > deadline:
            return events, raw
        time.sleep(1)


def admin_events(events: list[dict], action: str, target: str | None = None) -> list[dict]:
    """Final admin audit events of `action` (on `target`, when given)."""
    return [
        e
        for e in events
        if e.get("provider") == "admin"
        and is_final(e)
        and isinstance(e.get("admin"), dict)
        and e["admin"].get("action") == action
        and (target is None or e["admin"].get("target") == target)
    ]
