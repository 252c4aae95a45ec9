"""The local stack and the deployed stack come from one configuration (config/gateway.json) and cannot
drift: a local stack started with no overrides creates the queues, buckets, groups and user pool the
synthesized CDK template declares for its `dev` environment, and gives every function the environment
the template gives it, variable for variable and value for value.

Every difference is listed below with its reason; a new one fails the test until it is explained here.
The template is the one `cdk/test.sh` synthesizes (tests/run.sh runs it before this suite).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import REPO_ROOT, aws_client
from test_local_stack import SecondStack

TEMPLATE = REPO_ROOT / "cdk" / "cdk.out.dev" / "LlmGateway-dev-us-east-1.template.json"
CONFIG = json.loads((REPO_ROOT / "config" / "gateway.json").read_text())
PROJECT = CONFIG["project"]

# Variables only the local stack sets, and why.
LOCAL_ONLY = {
    "AWS_REGION": "Lambda sets it in every function's environment itself",
    "COGNITO_JWKS_URL": "moto serves the pool's signing keys; deployed, the authorizer reads the pool's public JWKS (the default)",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "the bundled Bedrock mock; deployed, the SDK's regional endpoint",
    "GATEWAY_MAIL_FROM": "the local stack always sends invitations through moto's SES, where tests read them; dev "
    "configures no SES identity, so deployed Cognito mails its own",
}
# Variables only the template sets, and why.
TEMPLATE_ONLY = {
    "GATEWAY_BEDROCK_REGION": "the stack's region; locally its default, AWS_REGION, is the same",
}
# Variables both set to different values, and why.
DIFFERENT_VALUES = {
    "GATEWAY_DISPATCH_VISIBILITY_SECS": "Lambda needs a request queue's visibility timeout at least the dispatcher's "
    "(900 s); locally it stays the configured 30 s, so a crashed dispatch is retried within a test",
    "GATEWAY_AZURE_OPENAI_ENDPOINT": "the bundled Azure OpenAI mock",
    "GATEWAY_GEMINI_ENDPOINT": "the bundled Gemini mock",
}


def pascal(name: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in name.split("-"))


@pytest.fixture(scope="module")
def template() -> dict:
    if not TEMPLATE.exists():
        pytest.fail(f"{TEMPLATE} is missing: run `cd cdk && ./test.sh` first (tests/run.sh does)")
    return json.loads(TEMPLATE.read_text())


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def one(template: dict, kind: str, prefix: str) -> dict:
    found = [v for k, v in resources(template, kind).items() if k.startswith(prefix)]
    assert len(found) == 1, f"{kind} {prefix}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def configured(tmp_path_factory) -> dict:
    """A local stack with nothing overridden: every setting from the configuration."""
    stack = SecondStack(tmp_path_factory.mktemp("parity") / "stack")
    try:
        stack.wait_ready()
        yield json.loads(stack.state_file.read_text())
    finally:
        stack.stop()


def template_functions(template: dict) -> dict[str, dict]:
    functions = resources(template, "AWS::Lambda::Function")
    by_prefix = {}
    for logical_id, function in functions.items():
        by_prefix[logical_id] = function["Properties"]["Environment"]["Variables"]
    return by_prefix


def test_the_same_functions_with_the_same_environments(template, configured):
    deployed = template_functions(template)
    local = configured["functions"]
    for name in local:
        assert sum(1 for logical_id in deployed if logical_id.startswith(pascal(name))) == 1, name
    assert len(deployed) == len(local), (sorted(deployed), sorted(local))

    for name, local_env in local.items():
        deployed_env = next(env for logical_id, env in deployed.items() if logical_id.startswith(pascal(name)))
        only_local = set(local_env) - set(deployed_env)
        only_deployed = set(deployed_env) - set(local_env)
        assert only_local <= set(LOCAL_ONLY), f"{name}: unexplained local-only {sorted(only_local - set(LOCAL_ONLY))}"
        assert only_deployed <= set(TEMPLATE_ONLY), (
            f"{name}: the local stack does not set {sorted(only_deployed - set(TEMPLATE_ONLY))}"
        )
        for variable in set(local_env) & set(deployed_env):
            value = deployed_env[variable]
            if not isinstance(value, str) or variable in DIFFERENT_VALUES:
                continue  # a resource's ARN/URL (a CloudFormation reference), or a listed difference
            assert local_env[variable] == value, f"{name}: {variable} is {local_env[variable]!r} here, {value!r} deployed"
    # The listed differences are real ones (a stale entry fails too).
    every_local = {v for env in local.values() for v in env}
    every_deployed = {v for env in deployed.values() for v in env}
    assert set(LOCAL_ONLY) <= every_local - every_deployed
    assert set(TEMPLATE_ONLY) <= every_deployed - every_local


def test_routes_use_the_configured_transports(template, configured):
    for provider, settings in CONFIG["providers"].items():
        assert configured["transports"][provider] == settings["transport"]
        deployed = next(env for logical_id, env in template_functions(template).items()
                        if logical_id.startswith(pascal(provider)))
        assert deployed["GATEWAY_TRANSPORT"] == settings["transport"]
        assert configured["functions"][provider]["GATEWAY_TRANSPORT"] == settings["transport"]


def test_the_same_queues_with_the_same_dead_letter_rules(template, configured):
    declared = {}
    for queue in resources(template, "AWS::SQS::Queue").values():
        name = queue["Properties"]["QueueName"].replace(f"{PROJECT}-dev-", f"{PROJECT}-local-", 1)
        declared[name] = queue["Properties"].get("RedrivePolicy", {}).get("maxReceiveCount")
    sqs = aws_client(configured, "sqs")
    urls = sqs.list_queues(QueueNamePrefix=f"{PROJECT}-local-").get("QueueUrls", [])
    created = {}
    for url in urls:
        redrive = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
        policy = json.loads(redrive.get("Attributes", {}).get("RedrivePolicy", "{}"))
        created[url.rsplit("/", 1)[1]] = policy.get("maxReceiveCount")
    assert created.keys() == declared.keys()
    assert {k: v and int(v) for k, v in created.items()} == declared


def test_the_same_groups(template, configured):
    declared = sorted(g["Properties"]["GroupName"] for g in resources(template, "AWS::Cognito::UserPoolGroup").values())
    cognito = aws_client(configured, "cognito-idp")
    created = sorted(g["GroupName"] for g in cognito.list_groups(UserPoolId=configured["user_pool_id"])["Groups"])
    assert created == declared == sorted(configured["groups"])
    assert [g for g in declared if g.startswith("dept-")] == sorted(f"dept-{d}" for d in CONFIG["departments"])


def test_the_same_user_pool_rules(template, configured):
    declared = one(template, "AWS::Cognito::UserPool", "UserPool")["Properties"]
    pool = aws_client(configured, "cognito-idp").describe_user_pool(UserPoolId=configured["user_pool_id"])["UserPool"]
    assert pool["Name"] == f"{PROJECT}-local" and declared["UserPoolName"] == f"{PROJECT}-dev"
    local_policy = pool["Policies"]["PasswordPolicy"]
    for key in ("MinimumLength", "RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"):
        assert local_policy[key] == declared["Policies"]["PasswordPolicy"][key], key
    local_custom = sorted(a["Name"] for a in pool["SchemaAttributes"] if a["Name"].startswith("custom:"))
    assert local_custom == sorted(f"custom:{a['Name']}" for a in declared["Schema"])
    # MFA: required deployed, off here (moto cannot answer a TOTP challenge for scripted sign-in).
    assert declared["MfaConfiguration"] == "ON" and pool["MfaConfiguration"] == "OFF"


def test_the_same_bucket_rules(template, configured):
    s3 = aws_client(configured, "s3")
    audit = one(template, "AWS::S3::Bucket", "AuditBucket")["Properties"]
    lock = s3.get_object_lock_configuration(Bucket=configured["buckets"]["audit"])["ObjectLockConfiguration"]
    retention = lock["Rule"]["DefaultRetention"]
    declared = audit["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert (retention["Mode"], retention["Days"]) == (declared["Mode"], declared["Days"])
    assert retention.get("Years", 0) == 0 and "Years" not in declared
    assert s3.get_bucket_versioning(Bucket=configured["buckets"]["audit"])["Status"] == "Enabled"
    assert audit["VersioningConfiguration"]["Status"] == "Enabled"

    payloads = one(template, "AWS::S3::Bucket", "PayloadBucket")["Properties"]
    declared_days = [r["ExpirationInDays"] for r in payloads["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=configured["buckets"]["payloads"])["Rules"]
    assert [r["Expiration"]["Days"] for r in rules] == declared_days == [CONFIG["environments"]["dev"]["payloadExpiryDays"]]


def test_a_stale_template_is_noticed(template):
    """The template was synthesized from the configuration as it is now."""
    queued = sorted(p for p, s in CONFIG["providers"].items() if s["transport"] == "queue")
    names = {q["Properties"]["QueueName"] for q in resources(template, "AWS::SQS::Queue").values()}
    assert {f"{PROJECT}-dev-requests-{p}" for p in queued} <= names
    assert Path(TEMPLATE).stat().st_mtime >= (REPO_ROOT / "config" / "gateway.json").stat().st_mtime, (
        "config/gateway.json changed after the template was synthesized: run `cd cdk && ./test.sh`"
    )
