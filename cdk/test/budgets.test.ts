// Budgets (issue 13): the usage table, the budget tables' variables and the routes' grants (the audit writer's
// and the admin API's whole grants are in test/identity.test.ts), who may touch the two tables at all, and the
// two budget alarms with what their log filters read. The department settings table's shape is the mirrored
// tables' (test/identity.test.ts); both tables' throttle and error alarms are every table's (test/operations.test.ts).
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import { EnvironmentName, loadConfig } from '../lib/config';
import {
  BUDGET_REFUSAL_FILTER_PATTERN, BUDGET_REFUSAL_KIND, THRESHOLDS, UNSETTLED_FILTER_PATTERN, UNSETTLED_LOG_MESSAGE,
} from '../lib/operations';
import {
  build, dynamoGrants, envOf, functionId, functionsWith, grants, jsonFilterMatches, list, resourcesOf, roleOf,
  statementsOn, tableArn, tableUsers, tracingCalls, updateIndexArn,
} from './helpers';

const repo = path.join(__dirname, '..', '..');
const config = loadConfig();
const ENVS: EnvironmentName[] = ['dev', 'staging', 'prod'];
const templates = Object.fromEntries(ENVS.map((e) => [e, build({ envName: e }).template])) as Record<EnvironmentName, Template>;
const dev = templates.dev;
const ROUTES = ['AzureOpenai', 'BedrockClaude', 'Gemini'];

const idOf = (t: Template, type: string, prefix: string) => {
  const found = Object.keys(resourcesOf(t, type)).filter((id) => id.startsWith(prefix));
  assert.equal(found.length, 1, `${prefix}: ${found.join(', ')}`);
  return found[0];
};
const usageId = (t: Template) => idOf(t, 'AWS::DynamoDB::Table', 'UsageTable');
const departmentsId = (t: Template) => idOf(t, 'AWS::DynamoDB::Table', 'DepartmentsTable');
const functionIds = (t: Template, fns: string[]) => fns.map((fn) => functionId(t, fn)).sort();

describe('the usage table', () => {
  test('key counter (S), TTL expires_at, no index, on demand, PITR, the data key, the stack\'s name', () => {
    const table = resourcesOf(dev, 'AWS::DynamoDB::Table')[usageId(dev)];
    assert.deepEqual(table.Properties, {
      TableName: 'llm-gateway-dev-usage',
      KeySchema: [{ AttributeName: 'counter', KeyType: 'HASH' }],
      AttributeDefinitions: [{ AttributeName: 'counter', AttributeType: 'S' }],
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: { 'Fn::GetAtt': [idOf(dev, 'AWS::KMS::Key', 'DataKey'), 'Arn'] } },
      TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
      DeletionProtectionEnabled: false,
    });
    assert.equal(table.DeletionPolicy, 'Delete');
  });
  test('of the two budget tables, only the usage table has a TTL and only the settings table the update index', () => {
    const tables = resourcesOf(dev, 'AWS::DynamoDB::Table');
    const departments = tables[departmentsId(dev)].Properties;
    assert.equal(departments.TableName, 'llm-gateway-dev-departments');
    assert.equal(departments.TimeToLiveSpecification, undefined);
    assert.deepEqual(departments.GlobalSecondaryIndexes.map((i: any) => i.IndexName), ['by-update']);
    assert.equal(tables[usageId(dev)].Properties.GlobalSecondaryIndexes, undefined);
  });
  test('prod keeps it: retained, with deletion protection', () => {
    const table = resourcesOf(templates.prod, 'AWS::DynamoDB::Table')[usageId(templates.prod)];
    assert.equal(table.DeletionPolicy, 'Retain');
    assert.equal(table.Properties.DeletionProtectionEnabled, true);
    assert.equal(table.Properties.TableName, 'llm-gateway-prod-usage');
  });
  test('its name is an output, beside the settings table\'s', () => {
    const outputs = dev.toJSON().Outputs;
    assert.deepEqual(outputs.UsageTableName.Value, { Ref: usageId(dev) });
    assert.deepEqual(outputs.DepartmentsTableName.Value, { Ref: departmentsId(dev) });
  });
});

describe('the budget variables, on exactly the functions the local stack gives them', () => {
  for (const envName of ENVS) {
    test(`${envName}: the routes the two tables and the settings cache, the audit writer the usage table, the admin API both tables`, () => {
      const t = templates[envName];
      assert.deepEqual(functionsWith(t, 'GATEWAY_USAGE_TABLE'), functionIds(t, [...ROUTES, 'AuditWriter', 'AdminApi']));
      assert.deepEqual(functionsWith(t, 'GATEWAY_DEPARTMENT_TABLE'), functionIds(t, [...ROUTES, 'AdminApi']));
      assert.deepEqual(functionsWith(t, 'GATEWAY_SETTINGS_CACHE_SECS'), functionIds(t, ROUTES));
      const cacheSecs = String(config.environments[envName].identity.revocationCacheSeconds);
      for (const fn of [...ROUTES, 'AuditWriter', 'AdminApi']) {
        const env = envOf(t, fn);
        assert.deepEqual(env.GATEWAY_USAGE_TABLE, { Ref: usageId(t) }, fn);
        if (fn !== 'AuditWriter') assert.deepEqual(env.GATEWAY_DEPARTMENT_TABLE, { Ref: departmentsId(t) }, fn);
        // A changed budget applies within the same bound as a revocation.
        if (ROUTES.includes(fn)) assert.equal(env.GATEWAY_SETTINGS_CACHE_SECS, cacheSecs, fn);
      }
      assert.equal(envOf(t, 'Authorizer').GATEWAY_REVOCATION_CACHE_SECS, cacheSecs);
    });
  }
});

describe('grants on the budget tables', () => {
  test('each route: Query on the settings table\'s update index, UpdateItem on the usage table, nothing else in DynamoDB; the data key', () => {
    for (const envName of ENVS) {
      const t = templates[envName];
      for (const fn of ROUTES) {
        assert.deepEqual(dynamoGrants(t, fn), grants([
          [updateIndexArn(tableArn(departmentsId(t))), ['dynamodb:Query']],
          [tableArn(usageId(t)), ['dynamodb:UpdateItem']],
        ]), `${envName} ${fn}`);
        const kms = statementsOn(t, fn, 'kms').filter((s) => JSON.stringify(s.Resource).includes('DataKey'))
          .flatMap((s) => list<string>(s.Action));
        for (const a of ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*']) {
          assert.ok(kms.includes(a), `${envName} ${fn}: ${a} in ${kms}`);
        }
      }
    }
  });
  test('the settings table: only the routes and the admin API; the usage table: only the routes, the audit writer and the admin API', () => {
    for (const t of Object.values(templates)) {
      assert.deepEqual(tableUsers(t, departmentsId(t)), [...ROUTES, 'AdminApi'].map((fn) => roleOf(t, fn)).sort());
      assert.deepEqual(tableUsers(t, usageId(t)), [...ROUTES, 'AuditWriter', 'AdminApi'].map((fn) => roleOf(t, fn)).sort());
    }
  });
  test('transactions are granted through the actions they contain: no TransactWriteItems or ConditionCheckItem in any policy', () => {
    // AWS: a transaction's Put and Update are authorized as dynamodb:PutItem and dynamodb:UpdateItem on
    // their table ("Using IAM with DynamoDB transactions"); the gateway's transactions check no other item.
    for (const t of Object.values(templates)) {
      const actions = Object.values(resourcesOf(t, 'AWS::IAM::Policy'))
        .flatMap((p) => p.Properties.PolicyDocument.Statement.flatMap((s: any) => list<string>(s.Action)));
      assert.deepEqual(actions.filter((a) => /^dynamodb:(Transact|ConditionCheck)/.test(a)), []);
    }
  });
});

describe('budget alarms', () => {
  const filters = Object.values(resourcesOf(dev, 'AWS::Logs::MetricFilter')).map((f) => f.Properties);
  const alarm = (id: string) => resourcesOf(dev, 'AWS::CloudWatch::Alarm')[idOf(dev, 'AWS::CloudWatch::Alarm', id)].Properties;
  const logGroupOf = (fn: string) => resourcesOf(dev, 'AWS::Lambda::Function')[functionId(dev, fn)].Properties.LoggingConfig.LogGroup;
  const transformation = (metricName: string) => ({
    MetricName: metricName, MetricNamespace: 'LlmGateway/llm-gateway-dev', MetricValue: '1', Unit: 'Count',
  });

  test('budget refusals: a filter on each route\'s log group, one metric; informational alarm above the threshold in 5 minutes', () => {
    const refusals = filters.filter((f) => f.MetricTransformations[0].MetricName === 'BudgetRefusals');
    assert.deepEqual(refusals.map((f) => JSON.stringify(f.LogGroupName)).sort(), ROUTES.map((fn) => JSON.stringify(logGroupOf(fn))).sort());
    for (const f of refusals) {
      assert.equal(f.FilterPattern, BUDGET_REFUSAL_FILTER_PATTERN);
      assert.deepEqual(f.MetricTransformations, [transformation('BudgetRefusals')]);
    }
    const a = alarm('BudgetRefusals');
    assert.deepEqual([a.Namespace, a.MetricName, a.Statistic, a.Period], ['LlmGateway/llm-gateway-dev', 'BudgetRefusals', 'Sum', 300]);
    assert.deepEqual([a.ComparisonOperator, a.Threshold, a.EvaluationPeriods], ['GreaterThanThreshold', THRESHOLDS.budgetRefusals, 1]);
    assert.equal(a.TreatMissingData, 'notBreaching');
    assert.match(a.AlarmDescription, /informational/);
  });
  test('usage not settled: a filter on the audit writer\'s log group; alarm at 1 in 5 minutes', () => {
    const unsettled = filters.filter((f) => f.MetricTransformations[0].MetricName === 'UsageNotSettled');
    assert.equal(unsettled.length, 1);
    assert.deepEqual(unsettled[0].LogGroupName, logGroupOf('AuditWriter'));
    assert.equal(unsettled[0].FilterPattern, UNSETTLED_FILTER_PATTERN);
    assert.deepEqual(unsettled[0].MetricTransformations, [transformation('UsageNotSettled')]);
    const a = alarm('UsageNotSettled');
    assert.deepEqual([a.Namespace, a.MetricName, a.Statistic, a.Period], ['LlmGateway/llm-gateway-dev', 'UsageNotSettled', 'Sum', 300]);
    assert.deepEqual([a.ComparisonOperator, a.Threshold, a.EvaluationPeriods], ['GreaterThanOrEqualToThreshold', 1, 1]);
    assert.equal(a.TreatMissingData, 'notBreaching');
  });
});

describe('the budget filters read what the functions log', () => {
  const rust = (...p: string[]) => readFileSync(path.join(repo, ...p), 'utf8');
  const sources = (dir: string): string[] => readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.rs') ? [p] : [];
  });

  test('the routes\' error line: a warn with the error\'s kind, and a message field of its own beside "gateway error"', () => {
    const calls = tracingCalls(rust('shared', 'src', 'proxy.rs')).filter((c) => c.message === 'gateway error');
    assert.equal(calls.length, 1, 'one log call per gateway error');
    assert.equal(calls[0].level, 'warn');
    assert.match(calls[0].args, /\bkind = \?error\.kind\b/);
    // Why the filter does not name the message: the line's `fields` has the key twice.
    assert.match(calls[0].args, /\bmessage = %error\.message\b/);
  });
  test('in the route functions only a budget refuses with RateLimited', () => {
    // The budget gate turns an over-budget reservation into RateLimited (shared/src/budgets/gate.rs).
    assert.match(rust('shared', 'src', 'budgets', 'gate.rs'),
      /Refused::OverBudget\(message\)\)\) => \{\s*Err\(GatewayError::new\(ErrorKind::RateLimited, message\)\)/);
    // Elsewhere RateLimited is made only by API Gateway's throttling answers, which only the local stack's
    // API Gateway emulation calls (deployed, API Gateway answers them before any route runs).
    const made: string[] = [];
    for (const file of [...sources(path.join(repo, 'shared', 'src')), ...sources(path.join(repo, 'functions'))]) {
      const src = readFileSync(file, 'utf8');
      if (/GatewayError::new\(\s*ErrorKind::RateLimited/.test(src)) made.push(path.relative(repo, file));
      assert.doesNotMatch(src, /GatewayError::(throttled|quota_exceeded)\(\)/, file);
    }
    assert.deepEqual(made.sort(), ['shared/src/budgets/gate.rs', 'shared/src/error.rs']);
  });
  test('the refusal filter matches the line however a reader takes its doubled message key; other errors do not', () => {
    // tracing-subscriber's JSON fields in recording order: the format string's message first, then the fields.
    const printed = (kind: string): [string, string][] => [
      ['message', 'gateway error'], ['request_id', 'r-1'], ['provider', 'azure-openai'], ['kind', kind],
      ['message', "department sales's monthly budget of 1000 tokens is used up"],
    ];
    const readings = (kind: string) => [
      { level: 'WARN', fields: Object.fromEntries(printed(kind)), target: 'gateway_shared::proxy' },
      { level: 'WARN', fields: Object.fromEntries([...printed(kind)].reverse()), target: 'gateway_shared::proxy' },
    ];
    for (const line of readings(BUDGET_REFUSAL_KIND)) assert.equal(jsonFilterMatches(BUDGET_REFUSAL_FILTER_PATTERN, line), true);
    for (const kind of ['Forbidden', 'Internal', 'BadGateway']) {
      for (const line of readings(kind)) assert.equal(jsonFilterMatches(BUDGET_REFUSAL_FILTER_PATTERN, line), false, kind);
    }
    // A filter on the message would miss the line wherever the last key wins.
    assert.equal(jsonFilterMatches('{ $.fields.message = "gateway error" }', readings(BUDGET_REFUSAL_KIND)[0]), false);
  });
  test('the audit writer\'s line: one error call with the message the unsettled filter names', () => {
    const calls = tracingCalls(rust('functions', 'audit-writer', 'src', 'lib.rs')).filter((c) => c.message === UNSETTLED_LOG_MESSAGE);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].level, 'error');
    assert.doesNotMatch(calls[0].args, /\bmessage\s*=/, 'no message field of its own');
    const line = { level: 'ERROR', fields: { message: UNSETTLED_LOG_MESSAGE, message_id: 'm-1', error: 'usage counters: ...' }, target: 'audit_writer' };
    assert.equal(jsonFilterMatches(UNSETTLED_FILTER_PATTERN, line), true);
    const other = { level: 'ERROR', fields: { message: 'record is not an audit event; it will be retried, then dead-lettered', message_id: 'm-1' } };
    assert.equal(jsonFilterMatches(UNSETTLED_FILTER_PATTERN, other), false);
  });
});
