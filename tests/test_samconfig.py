"""cdk/samconfig.toml, for teams who deploy the synthesized templates with the SAM CLI, has one
section per environment and region of config/gateway.json, each naming that stack and its template as
`cdk/test.sh` synthesizes it."""

from __future__ import annotations

import json
import tomllib

from helpers import REPO_ROOT

CONFIG = json.loads((REPO_ROOT / "config" / "gateway.json").read_text())
SAMCONFIG = tomllib.loads((REPO_ROOT / "cdk" / "samconfig.toml").read_text())


def test_one_section_per_environment_and_region():
    expected = {f"{env}-{region}" for env, e in CONFIG["environments"].items() for region in e["regions"]}
    assert set(SAMCONFIG) - {"version"} == expected


def test_each_section_deploys_its_own_synthesized_template():
    for env, e in CONFIG["environments"].items():
        for region in e["regions"]:
            params = SAMCONFIG[f"{env}-{region}"]["deploy"]["parameters"]
            stack = f"LlmGateway-{env}-{region}"
            assert params["stack_name"] == stack and params["region"] == region
            template = REPO_ROOT / "cdk" / params["template_file"]
            assert template.name == f"{stack}.template.json" and template.parent.name == f"cdk.out.{env}"
            # cdk/test.sh synthesizes every environment's templates before this suite runs.
            assert template.is_file(), f"{template} missing: run `cd cdk && ./test.sh`"
            body = json.loads(template.read_text())
            assert "Resources" in body and "Transform" not in body
            assert set(params["capabilities"].split()) == {"CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"}
            assert params["confirm_changeset"] is (env == "prod"), "prod deploys show the change set first"
