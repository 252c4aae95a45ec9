// Budgets (issue 13): the usage table, the budget tables' variables and the routes' grants (the audit writer's
// and the admin API's whole grants are in test/identity.test.ts), who may touch the two tables at all, and the
// two budget alarms with what their log filters read; the scheduler's budget-alerts, usage-rollup and chargeback
// jobs (rules, variables, exact grants, alarm) and the admin API's read of the chargeback reports. The department
// settings table's shape is the mirrored tables' (test/identity.test.ts); both tables' throttle and error alarms
// are every table's (test/operations.test.ts).
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Template } from 'aws-cdk-lib/assertions';
import { EnvironmentName, loadConfig } from '../lib/config';
import {
  AUDIT_PREFIX, BUDGET_ALERTS_RATE, CHARGEBACK_REPORT_PREFIX, PROVISIONING_REPORT_PREFIX, SCHEDULER_JOBS, USAGE_REPORT_PREFIX,
} from '../lib/functions';
import {
  BUDGET_REFUSAL_FILTER_PATTERN, BUDGET_REFUSAL_KIND, THRESHOLDS, UNSETTLED_FILTER_PATTERN, UNSETTLED_LOG_MESSAGE,
} from '../lib/operations';
import {
  build, dynamoGrants, envOf, functionId, functionsWith, grants, jsonFilterMatches, list, resourcesOf, roleOf, statementsOf,
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
    test(`${envName}: the routes the two tables and the settings cache, the audit writer the usage table, the admin API and the scheduler both tables`, () => {
      const t = templates[envName];
      assert.deepEqual(functionsWith(t, 'GATEWAY_USAGE_TABLE'), functionIds(t, [...ROUTES, 'AuditWriter', 'AdminApi', 'Scheduler']));
      assert.deepEqual(functionsWith(t, 'GATEWAY_DEPARTMENT_TABLE'), functionIds(t, [...ROUTES, 'AdminApi', 'Scheduler']));
      assert.deepEqual(functionsWith(t, 'GATEWAY_SETTINGS_CACHE_SECS'), functionIds(t, ROUTES));
      const cacheSecs = String(config.environments[envName].identity.revocationCacheSeconds);
      for (const fn of [...ROUTES, 'AuditWriter', 'AdminApi', 'Scheduler']) {
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
  test('the settings table: only the routes, the admin API and the scheduler; the usage table: only those and the audit writer', () => {
    for (const t of Object.values(templates)) {
      assert.deepEqual(tableUsers(t, departmentsId(t)), [...ROUTES, 'AdminApi', 'Scheduler'].map((fn) => roleOf(t, fn)).sort());
      assert.deepEqual(tableUsers(t, usageId(t)), [...ROUTES, 'AuditWriter', 'AdminApi', 'Scheduler'].map((fn) => roleOf(t, fn)).sort());
    }
  });
  test('no TransactWriteItems or ConditionCheckItem in any policy: the gateway writes items one by one', () => {
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

describe('the scheduler\'s budget and report jobs', () => {
  const rust = (...p: string[]) => readFileSync(path.join(repo, ...p), 'utf8');
  const bucketId = (t: Template, name: 'AuditBucket' | 'ReportsBucket') => idOf(t, 'AWS::S3::Bucket', name);
  const bucketArn = (t: Template, name: 'AuditBucket' | 'ReportsBucket') => ({ 'Fn::GetAtt': [bucketId(t, name), 'Arn'] });
  const objects = (t: Template, name: 'AuditBucket' | 'ReportsBucket', prefix: string) =>
    ({ 'Fn::Join': ['', [bucketArn(t, name), `/${prefix}*`]] });
  /** A statement as comparable text: sorted actions and resources, its condition. */
  const shape = (s: any) => JSON.stringify({
    Action: list<string>(s.Action).sort(), Resource: list(s.Resource).map((r) => JSON.stringify(r)).sort(), Condition: s.Condition,
  });
  const shapes = (statements: any[]) => statements.map(shape).sort();
  /** The rules whose target is the scheduler, by the job their event names (one rule per job). */
  const jobRules = (t: Template) => {
    const scheduler = functionId(t, 'Scheduler');
    const byJob = new Map<string, any>();
    for (const rule of Object.values(resourcesOf(t, 'AWS::Events::Rule'))) {
      for (const target of rule.Properties.Targets ?? []) {
        if (target.Arn['Fn::GetAtt']?.[0] !== scheduler) continue;
        const { job } = JSON.parse(target.Input);
        assert.ok(!byJob.has(job), `a second rule for ${job}`);
        byJob.set(job, { rule: rule.Properties, target });
      }
    }
    return byJob;
  };

  test('every job of the Rust scheduler has a rule: one event each, {"job": ...} and nothing else, in every environment', () => {
    const variants = /pub enum Job \{([^}]*)\}/.exec(rust('functions', 'scheduler', 'src', 'lib.rs'))![1]
      .split(',').map((v) => v.trim()).filter(Boolean)
      .map((v) => v.replace(/[A-Z]/g, (c, i) => (i === 0 ? '' : '-') + c.toLowerCase()));
    assert.deepEqual([...variants].sort(), [...SCHEDULER_JOBS].sort());
    for (const envName of ENVS) {
      const rules = jobRules(templates[envName]);
      assert.deepEqual([...rules.keys()].sort(), [...SCHEDULER_JOBS].sort(), envName);
      for (const [job, { target }] of rules) assert.equal(target.Input, JSON.stringify({ job }), `${envName} ${job}`);
    }
  });
  test('the new rules are declared as the existing ones: enabled, 2 retries, 1 h maximum age, no dead-letter queue', () => {
    for (const envName of ENVS) {
      const t = templates[envName];
      const digest = Object.values(resourcesOf(t, 'AWS::Events::Rule'))
        .find((r) => r.Properties.Targets[0].Arn['Fn::GetAtt']?.[0] === functionId(t, 'AuditDigest'))!.Properties.Targets[0];
      for (const [job, { rule, target }] of jobRules(t)) {
        assert.equal(rule.State, 'ENABLED', job);
        assert.deepEqual(target.RetryPolicy, { MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 3600 }, job);
        assert.deepEqual(target.RetryPolicy, digest.RetryPolicy, job);
        assert.equal(target.DeadLetterConfig, undefined, job);
      }
    }
  });
  test('budget alerts every 5 minutes (the local stack\'s period), the rollup daily at 00:30 UTC, the chargeback on the 1st at 01:00 UTC', () => {
    const local = /BUDGET_ALERTS: \(&str, Duration\) = \("budget-alerts", Duration::from_secs\((\d+)\)\)/
      .exec(rust('local', 'src', 'schedule.rs'));
    assert.ok(local, 'local/src/schedule.rs names the budget alerts\' period');
    assert.equal(Number(local[1]), BUDGET_ALERTS_RATE.toSeconds());
    for (const envName of ENVS) {
      const rules = jobRules(templates[envName]);
      const expression = (job: string) => rules.get(job).rule.ScheduleExpression;
      assert.equal(expression('budget-alerts'), 'rate(5 minutes)', envName);
      // UTC whatever the provisioning offset: the rollups' days and months are UTC (chargeback.rs).
      assert.equal(expression('usage-rollup'), 'cron(30 0 * * ? *)', envName);
      assert.equal(expression('chargeback'), 'cron(0 4 1 * ? *)', envName);
    }
  });

  for (const envName of ENVS) {
    test(`${envName}: the jobs' variables, as the local stack names them; a mail-from only with an SES identity`, () => {
      const t = templates[envName];
      const env = envOf(t, 'Scheduler');
      const names = ['GATEWAY_DEPARTMENT_TABLE', 'GATEWAY_USAGE_TABLE', 'GATEWAY_AUDIT_BUCKET', 'GATEWAY_AUDIT_PREFIX', 'GATEWAY_REPORTS_BUCKET'];
      assert.deepEqual(Object.fromEntries(names.map((n) => [n, env[n]])), {
        GATEWAY_DEPARTMENT_TABLE: { Ref: departmentsId(t) },
        GATEWAY_USAGE_TABLE: { Ref: usageId(t) },
        GATEWAY_AUDIT_BUCKET: { Ref: bucketId(t, 'AuditBucket') },
        GATEWAY_AUDIT_PREFIX: AUDIT_PREFIX,
        GATEWAY_REPORTS_BUCKET: { Ref: bucketId(t, 'ReportsBucket') },
      });
      // The audit trail and the reports are the same buckets the writer and the provisioner use.
      assert.deepEqual(env.GATEWAY_AUDIT_BUCKET, envOf(t, 'AuditWriter').GATEWAY_AUDIT_BUCKET);
      assert.equal(env.GATEWAY_AUDIT_PREFIX, envOf(t, 'AuditWriter').GATEWAY_AUDIT_PREFIX);
      assert.deepEqual(env.GATEWAY_REPORTS_BUCKET, envOf(t, 'Provisioner').GATEWAY_REPORTS_BUCKET);
      const identity = config.environments[envName].identity;
      assert.equal(env.GATEWAY_MAIL_FROM, identity.sesIdentity === null ? undefined : identity.sesFromAddress);
    });
  }
  test('the scheduler sets every variable its code reads (but the reply idle time, which has its default); the local stack sets the same', () => {
    const read = new Set([...rust('functions', 'scheduler', 'src', 'lib.rs').matchAll(/"((?:GATEWAY|COGNITO)_[A-Z_]+)"/g)]
      .map((m) => m[1]));
    for (const name of ['GATEWAY_DEPARTMENT_TABLE', 'GATEWAY_USAGE_TABLE', 'GATEWAY_AUDIT_BUCKET', 'GATEWAY_AUDIT_PREFIX', 'GATEWAY_REPORTS_BUCKET']) {
      assert.ok(read.has(name), `the scheduler reads ${name}`);
    }
    const env = envOf(dev, 'Scheduler');
    assert.deepEqual([...read].filter((n) => !(n in env)), ['GATEWAY_REPLY_QUEUE_IDLE_SECS']);
    // local/src/environments.rs: the scheduler's environment (the parity test compares the two in full).
    const local = rust('local', 'src', 'environments.rs');
    const body = local.slice(local.indexOf('pub fn scheduler('), local.indexOf('\n}\n', local.indexOf('pub fn scheduler(')));
    assert.match(body, /with_budget_tables\(/);
    for (const name of ['GATEWAY_AUDIT_BUCKET', 'GATEWAY_AUDIT_PREFIX', 'GATEWAY_REPORTS_BUCKET']) assert.ok(body.includes(`"${name}"`), name);
    assert.match(local, new RegExp(`pub const AUDIT_PREFIX: &str = "${AUDIT_PREFIX}";`));
  });

  test('DynamoDB: the settings through the update index, the month counter read, the alert claim put and given back; exactly', () => {
    for (const envName of ENVS) {
      const t = templates[envName];
      assert.deepEqual(dynamoGrants(t, 'Scheduler'), grants([
        [tableArn(idOf(t, 'AWS::DynamoDB::Table', 'RevocationsTable')), ['dynamodb:PutItem', 'dynamodb:UpdateItem']],
        [updateIndexArn(tableArn(departmentsId(t))), ['dynamodb:Query']],
        [tableArn(usageId(t)), ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem']],
      ]), envName);
    }
  });
  test('DeleteItem: the scheduler\'s, on the usage table, and no other role\'s or table\'s', () => {
    for (const t of Object.values(templates)) {
      const deletes = Object.values(resourcesOf(t, 'AWS::IAM::Policy')).flatMap((p) => p.Properties.PolicyDocument.Statement
        .filter((s: any) => list<string>(s.Action).some((a) => /^dynamodb:(DeleteItem|BatchWriteItem|\*)$/.test(a)))
        .map((s: any) => [p.Properties.Roles.map((r: any) => r.Ref), s.Resource]));
      assert.deepEqual(deletes, [[[roleOf(t, 'Scheduler')], tableArn(usageId(t))]]);
    }
  });
  test('S3: the audit trail read under audit/ only, the reports written under reports/usage/ and reports/chargeback/ only; exactly', () => {
    for (const envName of ENVS) {
      const t = templates[envName];
      assert.deepEqual(shapes(statementsOn(t, 'Scheduler', 's3')), shapes([
        // S3AuditStore::list_latest lists versions (s3:ListBucketVersions); ListBucket lets a key gone between
        // the listing and the read answer NoSuchKey, which the store reads as "gone".
        { Action: ['s3:ListBucket', 's3:ListBucketVersions'], Resource: bucketArn(t, 'AuditBucket'),
          Condition: { StringLike: { 's3:prefix': [`${AUDIT_PREFIX}*`] } } },
        { Action: 's3:GetObject', Resource: objects(t, 'AuditBucket', AUDIT_PREFIX) },
        { Action: 's3:PutObject', Resource: [objects(t, 'ReportsBucket', USAGE_REPORT_PREFIX), objects(t, 'ReportsBucket', CHARGEBACK_REPORT_PREFIX)] },
      ]), envName);
    }
  });
  test('KMS: the data key only (the audit trail\'s and the reports\' bucket key): Decrypt to read, GenerateDataKey to put', () => {
    for (const envName of ENVS) {
      const t = templates[envName];
      const kms = statementsOn(t, 'Scheduler', 'kms');
      for (const s of kms) assert.deepEqual(s.Resource, { 'Fn::GetAtt': [idOf(t, 'AWS::KMS::Key', 'DataKey'), 'Arn'] }, envName);
      const actions = kms.flatMap((s) => list<string>(s.Action));
      for (const a of ['kms:Decrypt', 'kms:GenerateDataKey']) assert.ok(actions.includes(a), `${envName}: ${a}`);
      // The audit buckets' object data is under the data key; the bodies' and the digests' keys are not needed.
      assert.deepEqual(actions.filter((a) => /^kms:(Sign|Verify|GetPublicKey)$/.test(a)), [], envName);
    }
  });
  test('what the Rust code calls is what is granted: the keys it writes, the store\'s listing and unversioned reads', () => {
    const chargeback = rust('functions', 'scheduler', 'src', 'chargeback.rs');
    assert.match(chargeback, new RegExp(`format!\\("${USAGE_REPORT_PREFIX}daily/\\{day\\}\\.json"\\)`));
    assert.match(chargeback, new RegExp(`format!\\("${CHARGEBACK_REPORT_PREFIX}\\{month\\}/chargeback\\.\\{extension\\}"\\)`));
    // Of the store's calls (the AuditStore trait), the rollups make the listing of latest versions and the read
    // by key only: no first_key (ListObjectsV2) and no writes.
    const store = rust('shared', 'src', 'audit', 'digest', 'store.rs');
    const trait = store.slice(store.indexOf('pub trait AuditStore'), store.indexOf('\n}\n', store.indexOf('pub trait AuditStore')));
    const calls = [...trait.matchAll(/fn (\w+)/g)].map((m) => m[1]);
    assert.deepEqual([...calls].sort(), ['first_key', 'get', 'list_latest', 'put_if_absent']);
    assert.deepEqual(calls.filter((c) => new RegExp(`\\baudit\\s*\\.${c}\\(`).test(chargeback)).sort(), ['get', 'list_latest']);
    const fnBody = (name: string) => {
      const start = store.indexOf(`fn ${name}<`, store.indexOf('impl AuditStore for S3AuditStore'));
      return store.slice(start, store.indexOf('.boxed()', start));
    };
    assert.match(fnBody('list_latest'), /\.list_object_versions\(\)/);
    assert.doesNotMatch(fnBody('list_latest'), /list_objects_v2/);
    // GetObject without a version id: s3:GetObject, not s3:GetObjectVersion.
    const request = /\.get_object\(\)([\s\S]*?)\.send\(\)/.exec(fnBody('get'));
    assert.ok(request, 'the store\'s get calls GetObject');
    assert.doesNotMatch(request[1], /version_id/);
    // The admin API's chargeback read is under the prefix it may read.
    assert.match(rust('functions', 'admin-api', 'src', 'files.rs'),
      new RegExp(`format!\\("${CHARGEBACK_REPORT_PREFIX}\\{month\\}/chargeback\\.\\{extension\\}"\\)`));
  });
  test('the admin API reads reports/chargeback/* beside reports/provisioning/*, and writes nothing in the reports bucket', () => {
    for (const envName of ENVS) {
      const t = templates[envName];
      const reports = JSON.stringify(bucketArn(t, 'ReportsBucket'));
      const onReports = statementsOn(t, 'AdminApi', 's3').filter((s) => JSON.stringify(s.Resource).includes(reports));
      assert.deepEqual(shapes(onReports), shapes([
        { Action: 's3:ListBucket', Resource: bucketArn(t, 'ReportsBucket'),
          Condition: { StringLike: { 's3:prefix': [`${PROVISIONING_REPORT_PREFIX}*`, `${CHARGEBACK_REPORT_PREFIX}*`, `${USAGE_REPORT_PREFIX}*`] } } },
        { Action: 's3:GetObject', Resource: [objects(t, 'ReportsBucket', PROVISIONING_REPORT_PREFIX), objects(t, 'ReportsBucket', CHARGEBACK_REPORT_PREFIX), objects(t, 'ReportsBucket', USAGE_REPORT_PREFIX)] },
      ]), envName);
    }
  });
  test('no wildcard resource where the ARN is known: the scheduler\'s only * is sqs:ListQueues (and X-Ray with tracing)', () => {
    for (const envName of ENVS) {
      for (const s of statementsOf(templates[envName], 'Scheduler')) {
        if (!list(s.Resource).includes('*')) continue;
        for (const a of list<string>(s.Action)) assert.ok(a === 'sqs:ListQueues' || /^xray:/.test(a), `${envName}: ${a}`);
      }
    }
  });

  test('one errors alarm covers every job: 1 failed invocation in 5 minutes, its description naming them', () => {
    for (const envName of ENVS) {
      const t = templates[envName];
      const scheduler = functionId(t, 'Scheduler');
      const errors = Object.values(resourcesOf(t, 'AWS::CloudWatch::Alarm')).map((a) => a.Properties)
        .filter((a) => a.MetricName === 'Errors' && JSON.stringify(a.Dimensions) === JSON.stringify([{ Name: 'FunctionName', Value: { Ref: scheduler } }]));
      assert.equal(errors.length, 1, envName);
      const [a] = errors;
      assert.deepEqual([a.Namespace, a.Statistic, a.Period, a.Threshold, a.ComparisonOperator, a.TreatMissingData],
        ['AWS/Lambda', 'Sum', 300, 1, 'GreaterThanOrEqualToThreshold', 'notBreaching'], envName);
      for (const job of SCHEDULER_JOBS) assert.ok(a.AlarmDescription.includes(job), `${envName}: ${job} in ${a.AlarmDescription}`);
      // Every rule that invokes the scheduler is one of the jobs, so every one fails into this alarm.
      assert.equal(jobRules(t).size, SCHEDULER_JOBS.length);
    }
  });
});
