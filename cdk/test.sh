#!/usr/bin/env bash
# Checks the CDK app offline, with no AWS credentials: npm ci, type-check, tests (template assertions,
# cdk-nag), cdk synth of every environment (all configured regions), cfn-lint on the templates.
# Functions not built with cargo lambda are synthesized from the placeholder asset (README.md).
set -euo pipefail
cd "$(dirname "$0")"

CFN_LINT_VERSION=1.58.0
PYTHON=${GATEWAY_CDK_PYTHON:-python3}
export CDK_DISABLE_CLI_TELEMETRY=true AWS_EC2_METADATA_DISABLED=true CI=${CI:-true}
# No credentials and no account: synth must not need them.
unset AWS_PROFILE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN CDK_DEFAULT_ACCOUNT

step() { printf '\n== %s\n' "$*"; }

step "npm ci"
npm ci --no-audit --no-fund --loglevel=error

step "type-check"
npx tsc --noEmit

step "tests"
node --import tsx --test test/*.test.ts > .test-output.txt 2>&1 || { cat .test-output.txt; exit 1; }
grep -E '^# (tests|pass|fail)' .test-output.txt

assets=${GATEWAY_CDK_ASSETS:-auto}
rm -rf cdk.out.*
for env in dev staging prod; do
  step "cdk synth ($env, assets=$assets)"
  npx cdk synth --no-notices --no-version-reporting -q -c gatewayEnv="$env" -c assets="$assets" -o "cdk.out.$env" \
    2> ".synth-$env.txt" || { cat ".synth-$env.txt"; exit 1; }
  # cdk-nag reports as error annotations (synth fails above); nothing else may be an error either.
  if grep -E '^\[?Error|ERROR' ".synth-$env.txt"; then exit 1; fi
  ls "cdk.out.$env"/*.template.json
done

# The shipped environments leave the optional identity features off (no bootstrap administrator, no
# sign-in domain prefix): synthesize staging once with both on, so cfn-lint sees those resources too.
step "cdk synth (staging with a bootstrap administrator and a sign-in domain prefix, one region)"
mkdir -p cdk.out.identity-config
node -e '
  const c = JSON.parse(require("fs").readFileSync("../config/gateway.json", "utf8"));
  Object.assign(c.environments.staging.identity, {
    cognitoDomainPrefix: "example-gateway-staging",
    bootstrapAdmin: { username: "first.admin", email: "first.admin@example.com" },
  });
  require("fs").writeFileSync("cdk.out.identity-config/gateway.json", JSON.stringify(c));'
region=$(node -e 'console.log(JSON.parse(require("fs").readFileSync("../config/gateway.json", "utf8")).environments.staging.regions[0])')
npx cdk synth --no-notices --no-version-reporting -q -c gatewayEnv=staging -c assets="$assets" -c region="$region" \
  -c configFile=cdk.out.identity-config/gateway.json -o cdk.out.identity 2> .synth-identity.txt || { cat .synth-identity.txt; exit 1; }
if grep -E '^\[?Error|ERROR' .synth-identity.txt; then exit 1; fi
ls cdk.out.identity/*.template.json

step "cfn-lint $CFN_LINT_VERSION"
if [ ! -x .venv-cfn/bin/cfn-lint ] || ! .venv-cfn/bin/cfn-lint --version | grep -q "$CFN_LINT_VERSION"; then
  "$PYTHON" -m venv .venv-cfn
  .venv-cfn/bin/python -m pip install --quiet --disable-pip-version-check "cfn-lint==$CFN_LINT_VERSION"
fi
.venv-cfn/bin/cfn-lint --version
.venv-cfn/bin/cfn-lint --config-file .cfnlintrc.yaml -- cdk.out.*/*.template.json

step "ok"
