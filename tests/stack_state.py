"""The local stack's state file, typed: the Python twin of `StackState` in local/src/state.rs.

`load(path)` reads the file and checks it against these types strictly: a missing or unknown key, or a
value of another type, is an error naming its place. The Rust side refuses unknown fields too, so the
two cannot drift apart silently: whichever side is behind fails on the first start.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import TypedDict, Union, get_args, get_origin, get_type_hints


class DemoUser(TypedDict):
    username: str
    password: str
    groups: list[str]


class Buckets(TypedDict):
    audit: str
    payloads: str


class Keys(TypedDict):
    """KMS keys, by ARN."""

    audit_digest: str
    audit_bodies: str


class AuditBodies(TypedDict):
    enabled: bool
    max_bytes: int


class Provisioning(TypedDict):
    bucket: str
    reports_bucket: str
    recipient: str


class Identity(TypedDict):
    revocation_table: str
    apikey_table: str
    department_table: str
    usage_table: str
    mail_from: str
    mail_messages_url: str


class RequestQueue(TypedDict):
    url: str
    dlq: str


class Queues(TypedDict):
    audit: str
    audit_dlq: str
    # The queued routes' request queues only.
    requests: dict[str, RequestQueue]
    reply_prefix: str


class StackState(TypedDict):
    base_url: str
    https_base_url: str
    control_url: str
    ca_bundle: str
    aws_endpoint_url: str
    region: str
    user_pool_id: str
    app_client_id: str
    issuer: str
    jwks_url: str
    demo_user: DemoUser
    groups: list[str]
    # Providers are keyed by their route prefix: azure-openai, bedrock-claude, gemini.
    secrets: dict[str, str]
    upstreams: dict[str, str]
    mocks: dict[str, str]
    upstream_response_timeout_ms: int
    buckets: Buckets
    audit_bodies: AuditBodies
    # Each route's transport, "direct" or "queue".
    transports: dict[str, str]
    keys: Keys
    provisioning: Provisioning
    identity: Identity
    queues: Queues
    # Each function's environment by function name, as the CDK stack sets it in Lambda.
    functions: dict[str, dict[str, str]]


PROVIDERS = {"azure-openai", "bedrock-claude", "gemini"}


class StateShapeError(ValueError):
    pass


def _check(value: object, kind: object, where: str) -> None:
    if typing.is_typeddict(kind):
        if not isinstance(value, dict):
            raise StateShapeError(f"{where}: expected an object, got {type(value).__name__}")
        hints = get_type_hints(kind)
        missing = sorted(set(hints) - set(value))
        unknown = sorted(set(value) - set(hints))
        if missing or unknown:
            raise StateShapeError(f"{where}: missing keys {missing}, unknown keys {unknown}")
        for key, hint in hints.items():
            _check(value[key], hint, f"{where}.{key}")
        return
    origin = get_origin(kind)
    if origin is dict:
        if not isinstance(value, dict):
            raise StateShapeError(f"{where}: expected an object, got {type(value).__name__}")
        _, item = get_args(kind)
        for key, entry in value.items():
            if where.endswith(("secrets", "upstreams", "mocks", "requests", "transports")) and key not in PROVIDERS:
                raise StateShapeError(f"{where}: {key!r} is not a provider's spelling ({sorted(PROVIDERS)})")
            _check(entry, item, f"{where}.{key}")
        return
    if origin is list:
        if not isinstance(value, list):
            raise StateShapeError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = get_args(kind)
        for index, entry in enumerate(value):
            _check(entry, item, f"{where}[{index}]")
        return
    if origin is Union:
        for option in get_args(kind):
            try:
                _check(value, option, where)
                return
            except StateShapeError:
                continue
        raise StateShapeError(f"{where}: {value!r} matches none of {kind}")
    # bool is an int in Python; the state has no booleans where numbers go.
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise StateShapeError(f"{where}: expected an integer, got {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise StateShapeError(f"{where}: expected true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise StateShapeError(f"{where}: expected a string, got {value!r}")


def check(value: object) -> StackState:
    """`value` as a StackState, or a StateShapeError naming the first place it differs."""
    _check(value, StackState, "state")
    return typing.cast(StackState, value)


def load(path: Path) -> StackState:
    with open(path, encoding="utf-8") as fh:
        return check(json.load(fh))
