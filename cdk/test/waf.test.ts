import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { GatewayConfig, loadConfig } from '../lib/config';
import { ADMIN_RATE_LIMITED_BODY, COUNTED_BODY_RULES, CREDENTIAL_HEADERS, RATE_LIMITED_BODY } from '../lib/waf';
import { build, resourcesOf } from './helpers';

const config = loadConfig();
const { template } = build();
const acls = Object.values(resourcesOf(template, 'AWS::WAFv2::WebACL'));
const acl = acls[0].Properties;
const rule = (name: string) => acl.Rules.find((r: any) => r.Name === name);
/** The admin API's paths: behind the domain, and below the stage on the execute-api URL. */
const ADMIN_PATHS = {
  OrStatement: {
    Statements: ['/admin/', `/${config.environments.dev.api.stageName}/admin/`].map((prefix) => ({
      ByteMatchStatement: {
        FieldToMatch: { UriPath: {} }, PositionalConstraint: 'STARTS_WITH', SearchString: prefix,
        TextTransformations: [{ Priority: 0, Type: 'NONE' }],
      },
    })),
  },
};
const MANAGED = ['AWSManagedRulesCommonRuleSet', 'AWSManagedRulesKnownBadInputsRuleSet', 'AWSManagedRulesAmazonIpReputationList'];

describe('web ACL', () => {
  test('one regional ACL that allows by default, associated with every API\'s stage (the providers\' and the admin API\'s)', () => {
    assert.equal(acls.length, 1);
    assert.equal(acl.Scope, 'REGIONAL');
    assert.deepEqual(acl.DefaultAction, { Allow: {} });
    const stages = Object.keys(resourcesOf(template, 'AWS::ApiGateway::Stage')).sort();
    const associations = Object.values(resourcesOf(template, 'AWS::WAFv2::WebACLAssociation')).map((a) => a.Properties);
    const aclId = Object.keys(resourcesOf(template, 'AWS::WAFv2::WebACL'))[0];
    assert.deepEqual(associations.map((a) => a.WebACLArn), stages.map(() => ({ 'Fn::GetAtt': [aclId, 'Arn'] })));
    const associated = associations.map((a) => stages.find((s) => JSON.stringify(a.ResourceArn).includes(`"${s}"`))).sort();
    assert.deepEqual(associated, stages);
  });
  test('the three AWS managed rule groups, in force', () => {
    for (const name of MANAGED) {
      const r = rule(name);
      assert.ok(r, name);
      assert.deepEqual(r.OverrideAction, { None: {} });
      assert.equal(r.Statement.ManagedRuleGroupStatement.VendorName, 'AWS');
      assert.equal(r.Statement.ManagedRuleGroupStatement.Name, name);
    }
  });
  test('body rules that would block prompts count instead; no other rule is relaxed', () => {
    const counted = (name: string) => (rule(name).Statement.ManagedRuleGroupStatement.RuleActionOverrides ?? [])
      .map((o: any) => { assert.deepEqual(o.ActionToUse, { Count: {} }); return o.Name; });
    const common = counted('AWSManagedRulesCommonRuleSet');
    for (const r of ['SizeRestrictions_BODY', 'CrossSiteScripting_BODY', 'GenericLFI_BODY', 'GenericRFI_BODY', 'EC2MetaDataSSRF_BODY']) {
      assert.ok(common.includes(r), r);
    }
    assert.deepEqual(common, COUNTED_BODY_RULES.AWSManagedRulesCommonRuleSet);
    assert.deepEqual(counted('AWSManagedRulesKnownBadInputsRuleSet'), COUNTED_BODY_RULES.AWSManagedRulesKnownBadInputsRuleSet);
    assert.deepEqual(counted('AWSManagedRulesAmazonIpReputationList'), []);
    for (const name of Object.values(COUNTED_BODY_RULES).flat()) assert.match(name, /_BODY$/);
  });
  test('addresses outside allowedIps are blocked first', () => {
    const sets = Object.entries(resourcesOf(template, 'AWS::WAFv2::IPSet'));
    assert.equal(sets.length, 1);
    assert.deepEqual(sets[0][1].Properties.Addresses, config.environments.dev.allowedIps);
    const r = acl.Rules.find((x: any) => x.Priority === 0);
    assert.deepEqual(r.Action, { Block: {} });
    assert.deepEqual(r.Statement, { NotStatement: { Statement: { IPSetReferenceStatement: { Arn: { 'Fn::GetAtt': [sets[0][0], 'Arn'] } } } } });
  });
  test('without allowedIps there is no allow list', () => {
    const c: GatewayConfig = JSON.parse(JSON.stringify(config));
    c.environments.dev.allowedIps = [];
    const t = build({ config: c }).template;
    assert.deepEqual(resourcesOf(t, 'AWS::WAFv2::IPSet'), {});
    const rules = Object.values(resourcesOf(t, 'AWS::WAFv2::WebACL'))[0].Properties.Rules;
    assert.ok(!rules.some((r: any) => r.Statement.NotStatement));
  });
  test('a rate limit per client address answers 429 with JSON every provider\'s SDK reads', () => {
    const r = acl.Rules.find((x: any) => x.Name === 'RatePerClientIp');
    assert.deepEqual(r.Statement.RateBasedStatement, {
      Limit: config.environments.dev.api.wafRateLimitPer5Min, EvaluationWindowSec: 300, AggregateKeyType: 'IP',
      ScopeDownStatement: { NotStatement: { Statement: ADMIN_PATHS } },
    });
    const response = r.Action.Block.CustomResponse;
    assert.equal(response.ResponseCode, 429);
    assert.deepEqual(response.ResponseHeaders, [{ Name: 'x-amzn-ErrorType', Value: 'ThrottlingException' }]);
    const body = acl.CustomResponseBodies[response.CustomResponseBodyKey];
    assert.equal(body.ContentType, 'APPLICATION_JSON');
    assert.equal(body.Content, RATE_LIMITED_BODY);
    const json = JSON.parse(body.Content);
    assert.equal(typeof json.message, 'string'); // boto3 (Bedrock)
    assert.equal(typeof json.error.message, 'string'); // openai (Azure), google-genai
    assert.equal(json.error.code, 429);
    const prod = Object.values(resourcesOf(build({ envName: 'prod' }).template, 'AWS::WAFv2::WebACL'))[0].Properties;
    assert.equal(prod.Rules.find((x: any) => x.Statement.RateBasedStatement).Statement.RateBasedStatement.Limit,
      config.environments.prod.api.wafRateLimitPer5Min);
  });
  test('the admin API\'s requests count apart and get 429 in the admin error shape', () => {
    const r = acl.Rules.find((x: any) => x.Name === 'RatePerClientIpAdmin');
    assert.deepEqual(r.Statement.RateBasedStatement, {
      Limit: config.environments.dev.api.wafRateLimitPer5Min, EvaluationWindowSec: 300, AggregateKeyType: 'IP',
      ScopeDownStatement: ADMIN_PATHS,
    });
    assert.equal(r.Priority, acl.Rules.find((x: any) => x.Name === 'RatePerClientIp').Priority + 1);
    const response = r.Action.Block.CustomResponse;
    assert.equal(response.ResponseCode, 429);
    assert.equal(response.ResponseHeaders, undefined);
    const body = acl.CustomResponseBodies[response.CustomResponseBodyKey];
    assert.equal(body.ContentType, 'APPLICATION_JSON');
    assert.equal(body.Content, ADMIN_RATE_LIMITED_BODY);
    assert.deepEqual(Object.keys(JSON.parse(body.Content).error), ['code', 'message']);
    assert.equal(JSON.parse(body.Content).error.code, 'throttled');
    // Every request is counted by exactly one of the two rules: the providers' excludes what the admin's matches.
    assert.equal(acl.Rules.filter((x: any) => x.Statement.RateBasedStatement).length, 2);
  });
  test('priorities are distinct', () => {
    const priorities = acl.Rules.map((r: any) => r.Priority);
    assert.equal(new Set(priorities).size, priorities.length);
  });
});

describe('WAF logs', () => {
  const groups = Object.entries(resourcesOf(template, 'AWS::Logs::LogGroup'))
    .filter(([, g]) => String(g.Properties.LogGroupName).startsWith('aws-waf-logs-'));
  test('to aws-waf-logs-<project>-<env>, 365 days, under the data key', () => {
    assert.equal(groups.length, 1);
    const [, g] = groups[0];
    assert.equal(g.Properties.LogGroupName, 'aws-waf-logs-llm-gateway-dev');
    assert.equal(g.Properties.RetentionInDays, 365);
    const dataKey = Object.keys(resourcesOf(template, 'AWS::KMS::Key')).find((k) => k.startsWith('DataKey'));
    assert.deepEqual(g.Properties.KmsKeyId, { 'Fn::GetAtt': [dataKey, 'Arn'] });
    const logging = Object.values(resourcesOf(template, 'AWS::WAFv2::LoggingConfiguration'))[0].Properties;
    const destination = JSON.stringify(logging.LogDestinationConfigs);
    assert.ok(destination.includes(':log-group:aws-waf-logs-llm-gateway-dev"') && !destination.includes(':*'), destination);
  });
  test('the data key lets CloudWatch Logs encrypt this account\'s log groups', () => {
    const key = Object.entries(resourcesOf(template, 'AWS::KMS::Key')).find(([k]) => k.startsWith('DataKey'))![1];
    const s = key.Properties.KeyPolicy.Statement.find((x: any) => JSON.stringify(x.Principal).includes('logs.'));
    assert.ok(s.Action.includes('kms:GenerateDataKey*') && s.Action.includes('kms:Decrypt*'));
    assert.match(JSON.stringify(s.Condition.ArnLike['kms:EncryptionContext:aws:logs:arn']), /:logs:.*:\*"\]\]\}$/);
  });
  test('credentials and prompts never reach the logs or sampled requests', () => {
    const logging = Object.values(resourcesOf(template, 'AWS::WAFv2::LoggingConfiguration'))[0].Properties;
    const redacted = logging.RedactedFields;
    for (const h of ['authorization', 'x-api-key', 'api-key', 'x-goog-api-key']) {
      assert.ok(redacted.some((f: any) => f.SingleHeader?.Name === h), h);
    }
    assert.ok(redacted.some((f: any) => f.QueryString));
    const protections = acl.DataProtectionConfig.DataProtections;
    assert.deepEqual(protections.map((p: any) => [p.Field.FieldType, p.Action]), [
      ['SINGLE_HEADER', 'SUBSTITUTION'], ['QUERY_STRING', 'SUBSTITUTION'], ['BODY', 'SUBSTITUTION'],
    ]);
    assert.deepEqual(protections[0].Field.FieldKeys, CREDENTIAL_HEADERS);
    assert.ok(protections.every((p: any) => !p.ExcludeRuleMatchDetails && !p.ExcludeRateBasedDetails));
  });
  test('the web ACL ARN is a stack output', () => {
    const aclId = Object.keys(resourcesOf(template, 'AWS::WAFv2::WebACL'))[0];
    assert.deepEqual(template.toJSON().Outputs.WebAclArn.Value, { 'Fn::GetAtt': [aclId, 'Arn'] });
  });
});
