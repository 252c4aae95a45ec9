// The identity slice: the revocations, API key and department settings tables, the new environment of the authorizer,
// provisioner, scheduler, admin-api and audit writer with their exact grants, the daily user-dates rule, the
// admin scopes and groups, the bootstrap administrator (docs: the identity contract).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { EnvironmentName, GatewayConfig, loadConfig, parseConfig } from '../lib/config';
import { UPLOAD_URL_TTL_SECS, dailyUtcCron, utcOffsetLabel } from '../lib/functions';
import { signInUrl } from '../lib/identity';
import {
  build, dynamoGrants as dynamo, envOf, functionId, functionsWith, grants, list, resourcesOf, roleOf, statementsOf,
  statementsOn as on, tableArn, tableUsers, updateIndexArn as indexOf,
} from './helpers';

const config = loadConfig();
function configWith(change: (c: any) => void): GatewayConfig {
  const c = structuredClone(config) as any;
  change(c);
  return parseConfig(c);
}
const ADMIN = { username: 'first.admin', email: 'first.admin@example.com' };
const DOMAIN_PREFIX = 'example-gateway-login';
/** staging with a domain prefix and a bootstrap administrator. */
const stagingFull = configWith((c) => {
  c.environments.staging.identity.cognitoDomainPrefix = DOMAIN_PREFIX;
  c.environments.staging.identity.bootstrapAdmin = ADMIN;
});

const dev = build();
const staging = build({ envName: 'staging', config: stagingFull, region: 'ap-northeast-1' });
const prod = build({ envName: 'prod' });

const only = <T>(xs: T[], what: string): T => {
  assert.equal(xs.length, 1, what);
  return xs[0];
};
const idOf = (t: Template, type: string, prefix: string) =>
  only(Object.keys(resourcesOf(t, type)).filter((id) => id.startsWith(prefix)), prefix);
const tableId = (t: Template) => idOf(t, 'AWS::DynamoDB::Table', 'RevocationsTable');
const apiKeysId = (t: Template) => idOf(t, 'AWS::DynamoDB::Table', 'ApiKeysTable');
const departmentsId = (t: Template) => idOf(t, 'AWS::DynamoDB::Table', 'DepartmentsTable');
const usageId = (t: Template) => idOf(t, 'AWS::DynamoDB::Table', 'UsageTable');
const poolArn = (t: Template) => ({ 'Fn::GetAtt': [idOf(t, 'AWS::Cognito::UserPool', 'UserPool'), 'Arn'] });
const keyArn = (t: Template) => ({ 'Fn::GetAtt': [idOf(t, 'AWS::KMS::Key', 'DataKey'), 'Arn'] });
const sesArn = (identity: string) => ({
  'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':ses:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, `:identity/${identity}`]],
});

/**
 * The tables functions mirror (the authorizer two, the routes the department settings): one shape
 * (createMirroredTable in lib/storage.ts) but for the key and the TTL. The API key table has none: expired
 * and revoked keys stay listed, and the authorizer says why it refuses one; department settings stay until
 * changed. The stack's other table, the usage counters, is test/budgets.test.ts's.
 */
const MIRRORED = [
  { what: 'revocations', id: tableId, key: 'sub', ttl: 'expires_at', output: 'RevocationsTableName' },
  { what: 'apikeys', id: apiKeysId, key: 'key_id', ttl: undefined, output: 'ApiKeysTableName' },
  { what: 'departments', id: departmentsId, key: 'department', ttl: undefined, output: 'DepartmentsTableName' },
];
for (const spec of MIRRORED) {
  describe(`the ${spec.what} table`, () => {
    test(`key ${spec.key} (S), the update index the authorizer polls, on demand, PITR, the data key, TTL ${spec.ttl ?? 'none'}, the stack's name`, () => {
      const t = dev.template;
      const table = resourcesOf(t, 'AWS::DynamoDB::Table')[spec.id(t)];
      assert.deepEqual(table.Properties, {
        TableName: `llm-gateway-dev-${spec.what}`,
        KeySchema: [{ AttributeName: spec.key, KeyType: 'HASH' }],
        AttributeDefinitions: [
          { AttributeName: spec.key, AttributeType: 'S' },
          { AttributeName: 'rev', AttributeType: 'S' },
          { AttributeName: 'updated_ms', AttributeType: 'N' },
        ],
        GlobalSecondaryIndexes: [{
          IndexName: 'by-update',
          KeySchema: [{ AttributeName: 'rev', KeyType: 'HASH' }, { AttributeName: 'updated_ms', KeyType: 'RANGE' }],
          Projection: { ProjectionType: 'ALL' },
        }],
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: keyArn(t) },
        ...(spec.ttl !== undefined && { TimeToLiveSpecification: { AttributeName: spec.ttl, Enabled: true } }),
        DeletionProtectionEnabled: false,
      });
      assert.equal(table.DeletionPolicy, 'Delete');
      assert.deepEqual(Object.keys(resourcesOf(t, 'AWS::DynamoDB::Table')).sort(), [...MIRRORED.map((m) => m.id(t)), usageId(t)].sort());
    });
    test('prod keeps it: retained, with deletion protection', () => {
      const table = resourcesOf(prod.template, 'AWS::DynamoDB::Table')[spec.id(prod.template)];
      assert.equal(table.DeletionPolicy, 'Retain');
      assert.equal(table.Properties.DeletionProtectionEnabled, true);
      assert.equal(table.Properties.TableName, `llm-gateway-prod-${spec.what}`);
    });
    test('its name is an output', () => {
      assert.deepEqual(dev.template.toJSON().Outputs[spec.output].Value, { Ref: spec.id(dev.template) });
    });
  });
}

describe('environment of the identity functions', () => {
  const t = dev.template;
  const table = () => ({ Ref: tableId(t) });
  const pool = { Ref: idOf(t, 'AWS::Cognito::UserPool', 'UserPool') };
  const queue = { Ref: idOf(t, 'AWS::SQS::Queue', 'AuditQueue1') };
  const departments = JSON.stringify(Object.fromEntries(Object.entries(config.departments)
    .sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, d]) => [id, d.names])));
  const offset = String(config.environments.dev.identity.provisioningUtcOffsetMinutes);

  test('authorizer: the table and the revocation cache per environment (dev 5, staging 15, prod 30)', () => {
    const env = envOf(t, 'Authorizer');
    assert.deepEqual(env.GATEWAY_REVOCATION_TABLE, table());
    assert.equal(env.GATEWAY_REVOCATION_CACHE_SECS, '5');
    assert.equal(envOf(staging.template, 'Authorizer').GATEWAY_REVOCATION_CACHE_SECS, '15');
    assert.equal(envOf(prod.template, 'Authorizer').GATEWAY_REVOCATION_CACHE_SECS, '30');
    assert.deepEqual(Object.keys(env).sort(), [
      'COGNITO_APP_CLIENT_IDS', 'COGNITO_USER_POOL_ID', 'GATEWAY_APIKEY_TABLE', 'GATEWAY_AUDIT_QUEUE_URL',
      'GATEWAY_REVOCATION_CACHE_SECS', 'GATEWAY_REVOCATION_TABLE', 'GATEWAY_USAGE_KEYS_SECRET_ID', 'RUST_LOG',
    ]);
  });
  test('GATEWAY_APIKEY_TABLE on the authorizer, the admin API and the audit writer, and no other function (as the local stack sets it)', () => {
    for (const tt of [dev.template, staging.template, prod.template]) {
      assert.deepEqual(functionsWith(tt, 'GATEWAY_APIKEY_TABLE'), ['Authorizer', 'AdminApi', 'AuditWriter'].map((fn) => functionId(tt, fn)).sort());
      for (const fn of ['Authorizer', 'AdminApi', 'AuditWriter']) {
        assert.deepEqual(envOf(tt, fn).GATEWAY_APIKEY_TABLE, { Ref: apiKeysId(tt) }, fn);
      }
    }
  });
  test('provisioner (dev: no SES identity, no domain prefix, so no mail-from and no sign-in URL)', () => {
    const env = envOf(t, 'Provisioner');
    assert.deepEqual(Object.keys(env).sort(), [
      'COGNITO_USER_POOL_ID', 'GATEWAY_AUDIT_QUEUE_URL', 'GATEWAY_DEPARTMENTS', 'GATEWAY_DEPARTMENT_GROUP_PREFIX',
      'GATEWAY_PROVISIONING_BUCKET', 'GATEWAY_PROVISIONING_IDENTITY_SECRET_ID', 'GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES',
      'GATEWAY_REPORTS_BUCKET', 'GATEWAY_REVOCATION_TABLE', 'RUST_LOG',
    ]);
    assert.deepEqual(env.GATEWAY_REVOCATION_TABLE, table());
    assert.deepEqual(env.GATEWAY_AUDIT_QUEUE_URL, queue);
    assert.equal(env.GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES, offset);
  });
  test('scheduler: the pool, departments, offset, table, audit queue; its budget and report jobs\' tables and buckets', () => {
    const { GATEWAY_USAGE_PLANS: plans, ...env } = envOf(t, 'Scheduler');
    assert.deepEqual(usagePlans(plans), configuredPlans(t));
    assert.deepEqual(env, {
      RUST_LOG: config.environments.dev.logLevel,
      GATEWAY_REPLY_QUEUE_PREFIX: 'llm-gateway-reply-',
      COGNITO_USER_POOL_ID: pool,
      GATEWAY_DEPARTMENTS: departments,
      GATEWAY_DEPARTMENT_GROUP_PREFIX: 'dept-',
      GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES: offset,
      GATEWAY_REVOCATION_TABLE: table(),
      GATEWAY_AUDIT_QUEUE_URL: queue,
      // test/budgets.test.ts: these per environment, with what the jobs do with them.
      GATEWAY_DEPARTMENT_TABLE: { Ref: departmentsId(t) },
      GATEWAY_USAGE_TABLE: { Ref: usageId(t) },
      GATEWAY_AUDIT_BUCKET: { Ref: idOf(t, 'AWS::S3::Bucket', 'AuditBucket') },
      GATEWAY_AUDIT_PREFIX: 'audit/',
      GATEWAY_REPORTS_BUCKET: { Ref: idOf(t, 'AWS::S3::Bucket', 'ReportsBucket') },
    });
  });
  test('admin-api: the pool, departments, offset, buckets, tables, audit queue, upload URL lifetime', () => {
    const { GATEWAY_USAGE_PLANS: plans, ...env } = envOf(t, 'AdminApi');
    assert.deepEqual(usagePlans(plans), configuredPlans(t));
    assert.deepEqual(env, {
      RUST_LOG: config.environments.dev.logLevel,
      COGNITO_USER_POOL_ID: pool,
      GATEWAY_DEPARTMENTS: departments,
      GATEWAY_DEPARTMENT_GROUP_PREFIX: 'dept-',
      GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES: offset,
      GATEWAY_PROVISIONING_BUCKET: { Ref: idOf(t, 'AWS::S3::Bucket', 'ProvisioningBucket') },
      GATEWAY_REPORTS_BUCKET: { Ref: idOf(t, 'AWS::S3::Bucket', 'ReportsBucket') },
      GATEWAY_REVOCATION_TABLE: table(),
      GATEWAY_APIKEY_TABLE: { Ref: apiKeysId(t) },
      GATEWAY_USAGE_TABLE: { Ref: usageId(t) },
      GATEWAY_DEPARTMENT_TABLE: { Ref: departmentsId(t) },
      GATEWAY_AUDIT_QUEUE_URL: queue,
      GATEWAY_UPLOAD_URL_TTL_SECS: String(UPLOAD_URL_TTL_SECS),
    });
    assert.equal(UPLOAD_URL_TTL_SECS, 300);
    // The provisioner's departments are the same text.
    assert.equal(envOf(t, 'Provisioner').GATEWAY_DEPARTMENTS, departments);
  });
  test('the admin API and the usage-plans job read and change exactly the departments\' usage plans', () => {
    for (const fn of ['AdminApi', 'Scheduler']) {
      const statements = statementsOf(t, fn).filter((st) => list<string>(st.Action).some((a) => a.startsWith('apigateway:')));
      assert.equal(statements.length, 1, fn);
      assert.deepEqual(list<string>(statements[0].Action).sort(), ['apigateway:GET', 'apigateway:PATCH'], fn);
      const planIds = list<Record<string, unknown>>(statements[0].Resource).map((r) => JSON.stringify(r).match(/"Ref":"(UsagePlan[A-Za-z0-9]+)"/)![1]).sort();
      assert.deepEqual(planIds, Object.values(configuredPlans(t)).map((p) => p.id.Ref).sort(), fn);
      assert.ok(list<Record<string, unknown>>(statements[0].Resource).every((r) => JSON.stringify(r).includes('::/usageplans/')), fn);
    }
  });
  test('with an SES identity: the configured from address; with a domain prefix: the managed login URL', () => {
    const s = staging.template;
    const url = {
      'Fn::Join': ['', [
        `https://${DOMAIN_PREFIX}.auth.ap-northeast-1.amazoncognito.com/login?client_id=`,
        { Ref: idOf(s, 'AWS::Cognito::UserPoolClient', 'UserPoolAppClient') },
        `&response_type=code&redirect_uri=${encodeURIComponent(config.environments.staging.callbackUrls[0])}`,
      ]],
    };
    for (const fn of ['Provisioner', 'Scheduler', 'AdminApi']) {
      const env = envOf(s, fn);
      assert.equal(env.GATEWAY_MAIL_FROM, config.environments.staging.identity.sesFromAddress, fn);
      assert.deepEqual(env.GATEWAY_SIGN_IN_URL, url, fn);
    }
    // The shipped staging names no domain prefix: a mail-from, no sign-in URL.
    const shipped = build({ envName: 'staging' }).template;
    assert.equal(envOf(shipped, 'AdminApi').GATEWAY_MAIL_FROM, 'gateway-staging@example.com');
    assert.equal(envOf(shipped, 'AdminApi').GATEWAY_SIGN_IN_URL, undefined);
  });
  test('the sign-in URL sends the browser back to the first callback URL, encoded', () => {
    assert.equal(signInUrl('p', 'us-east-1', 'abc', 'https://x.example.com/cb?a=1'),
      'https://p.auth.us-east-1.amazoncognito.com/login?client_id=abc&response_type=code&redirect_uri=https%3A%2F%2Fx.example.com%2Fcb%3Fa%3D1');
  });
});

describe('grants of the identity functions, exactly', () => {
  const t = dev.template;
  const table = () => tableArn(tableId(t));
  const apiKeys = () => tableArn(apiKeysId(t));
  const cognito = (tt: Template, fn: string) => {
    const st = on(tt, fn, 'cognito-idp');
    assert.equal(st.length, 1, fn);
    assert.deepEqual(st[0].Resource, poolArn(tt), fn);
    return list<string>(st[0].Action).map((a) => a.replace('cognito-idp:', '')).sort();
  };
  const auditQueue = (tt: Template) => ({ 'Fn::GetAtt': [idOf(tt, 'AWS::SQS::Queue', 'AuditQueue1'), 'Arn'] });

  test('authorizer: dynamodb:Query on the two tables\' update indexes only (no item reads); the data key to read them', () => {
    assert.deepEqual(dynamo(t, 'Authorizer'), grants([
      [indexOf(table()), ['dynamodb:Query']],
      [indexOf(apiKeys()), ['dynamodb:Query']],
    ]));
    assert.deepEqual(on(t, 'Authorizer', 'cognito-idp'), []);
    const kms = on(t, 'Authorizer', 'kms');
    assert.ok(kms.every((s) => JSON.stringify(s.Resource) === JSON.stringify(keyArn(t))), JSON.stringify(kms));
    assert.ok(kms.some((s) => list(s.Action).includes('kms:Decrypt')));
  });
  test('provisioner: its pool actions (password set and get added), table writes, audit queue', () => {
    assert.deepEqual(cognito(t, 'Provisioner'), [
      'AdminAddUserToGroup', 'AdminCreateUser', 'AdminDeleteUserAttributes', 'AdminDisableUser', 'AdminEnableUser',
      'AdminGetUser', 'AdminRemoveUserFromGroup', 'AdminSetUserPassword', 'AdminUpdateUserAttributes',
      'AdminUserGlobalSignOut', 'ListUsers', 'ListUsersInGroup',
    ]);
    assert.deepEqual(dynamo(t, 'Provisioner'), grants([[table(), ['dynamodb:PutItem', 'dynamodb:UpdateItem']]]));
    const sends = on(t, 'Provisioner', 'sqs');
    assert.deepEqual(sends.map((s) => s.Resource), [auditQueue(t)]);
    assert.ok(list(sends[0].Action).includes('sqs:SendMessage'));
  });
  test('scheduler: the date job\'s pool actions, table writes, audit queue (and the budget alerts\' tables)', () => {
    assert.deepEqual(cognito(t, 'Scheduler'), [
      'AdminDisableUser', 'AdminEnableUser', 'AdminGetUser', 'AdminSetUserPassword', 'AdminUserGlobalSignOut',
      'ListUsers', 'ListUsersInGroup',
    ]);
    // The revocations for the date job; the budget tables for the alerts job (test/budgets.test.ts).
    assert.deepEqual(dynamo(t, 'Scheduler'), grants([
      [table(), ['dynamodb:PutItem', 'dynamodb:UpdateItem']],
      [indexOf(tableArn(departmentsId(t))), ['dynamodb:Query']],
      [tableArn(usageId(t)), ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem']],
    ]));
    assert.ok(on(t, 'Scheduler', 'sqs').some((s) => JSON.stringify(s.Resource) === JSON.stringify(auditQueue(t))
      && list(s.Action).includes('sqs:SendMessage')));
  });
  test('admin-api: the pool, uploads under incoming/ and dry-run/, provisioning and chargeback reports, the tables, the audit queue', () => {
    assert.deepEqual(cognito(t, 'AdminApi'), [
      'AdminAddUserToGroup', 'AdminCreateUser', 'AdminDeleteUser', 'AdminDeleteUserAttributes', 'AdminDisableUser',
      'AdminEnableUser', 'AdminGetUser', 'AdminListGroupsForUser', 'AdminRemoveUserFromGroup', 'AdminResetUserPassword',
      'AdminSetUserPassword', 'AdminUpdateUserAttributes', 'AdminUserGlobalSignOut', 'DescribeUserPool', 'ListUsers',
      'ListUsersInGroup',
    ]);
    const provisioning = idOf(t, 'AWS::S3::Bucket', 'ProvisioningBucket');
    const reports = idOf(t, 'AWS::S3::Bucket', 'ReportsBucket');
    const objects = (bucket: string, prefix: string) => ({ 'Fn::Join': ['', [{ 'Fn::GetAtt': [bucket, 'Arn'] }, `/${prefix}*`]] });
    const s3 = on(t, 'AdminApi', 's3').map((s) => ({ Action: s.Action, Resource: s.Resource, Condition: s.Condition }));
    const sortResources = (r: any) => list(r).map((x) => JSON.stringify(x)).sort();
    assert.equal(s3.length, 3, JSON.stringify(s3));
    const put = s3.find((s) => s.Action === 's3:PutObject')!;
    assert.deepEqual(sortResources(put.Resource), sortResources([objects(provisioning, 'dry-run/'), objects(provisioning, 'incoming/')]));
    // Provisioning reports are listed and read; a month's chargeback report is read by key, listable so that
    // one not written yet is NoSuchKey (a 404) rather than AccessDenied.
    assert.deepEqual(s3.find((s) => s.Action === 's3:ListBucket'), {
      Action: 's3:ListBucket',
      Resource: { 'Fn::GetAtt': [reports, 'Arn'] },
      Condition: { StringLike: { 's3:prefix': ['reports/provisioning/*', 'reports/chargeback/*', 'reports/usage/*'] } },
    });
    const get = s3.find((s) => s.Action === 's3:GetObject')!;
    assert.equal(get.Condition, undefined);
    assert.deepEqual(sortResources(get.Resource),
      sortResources([objects(reports, 'reports/provisioning/'), objects(reports, 'reports/chargeback/'), objects(reports, 'reports/usage/')]));
    // Keys and department settings are listed through the update index, and read and written by id; usage
    // counters are only read.
    const departments = tableArn(departmentsId(t));
    assert.deepEqual(dynamo(t, 'AdminApi'), grants([
      [table(), ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem']],
      [apiKeys(), ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem']],
      [indexOf(apiKeys()), ['dynamodb:Query']],
      [departments, ['dynamodb:GetItem', 'dynamodb:PutItem']],
      [indexOf(departments), ['dynamodb:Query']],
      [tableArn(usageId(t)), ['dynamodb:GetItem']],
    ]));
    // The buckets' (and the table's and queue's) key is the data key: no other key.
    for (const s of on(t, 'AdminApi', 'kms')) assert.deepEqual(s.Resource, keyArn(t));
    assert.ok(on(t, 'AdminApi', 'sqs').some((s) => JSON.stringify(s.Resource) === JSON.stringify(auditQueue(t))));
  });
  test('audit writer: UpdateItem on the API key table (last use), PutItem and UpdateItem on the usage table (settling); the data key to write them', () => {
    assert.deepEqual(dynamo(t, 'AuditWriter'), grants([
      [apiKeys(), ['dynamodb:UpdateItem']],
      [tableArn(usageId(t)), ['dynamodb:PutItem', 'dynamodb:UpdateItem']],
    ]));
    const kms = on(t, 'AuditWriter', 'kms').flatMap((s) => {
      assert.deepEqual(s.Resource, keyArn(t));
      return list<string>(s.Action);
    });
    for (const a of ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'kms:GenerateDataKey*', 'kms:ReEncrypt*']) {
      assert.ok(kms.includes(a), `${a} in ${kms}`);
    }
  });
  test('the API key table: only the authorizer, the admin API and the audit writer; nobody has /index/*, a * resource or dynamodb:*', () => {
    for (const tt of [dev.template, staging.template, prod.template]) {
      assert.deepEqual(tableUsers(tt, apiKeysId(tt)), ['Authorizer', 'AdminApi', 'AuditWriter'].map((fn) => roleOf(tt, fn)).sort());
    }
  });
  test('SES: send on the configured identity only, and nothing without one', () => {
    for (const fn of ['Provisioner', 'Scheduler', 'AdminApi', 'Authorizer']) {
      assert.deepEqual(on(t, fn, 'ses'), [], `dev ${fn}`);
      const ses = on(staging.template, fn, 'ses');
      if (fn === 'Authorizer') {
        assert.deepEqual(ses, []);
        continue;
      }
      assert.deepEqual(ses.map((s) => [list<string>(s.Action).sort(), s.Resource]),
        [[['ses:SendEmail', 'ses:SendRawEmail'], sesArn(config.environments.staging.identity.sesIdentity!)]], fn);
    }
  });
  test('no role of these five has a * resource beyond X-Ray (tracing on in staging)', () => {
    for (const fn of ['Authorizer', 'Provisioner', 'Scheduler', 'AdminApi', 'AuditWriter']) {
      for (const s of statementsOf(staging.template, fn).filter((x) => list(x.Resource).includes('*'))) {
        for (const a of list<string>(s.Action)) assert.ok(/^xray:/.test(a) || (fn === 'Scheduler' && a === 'sqs:ListQueues'), `${fn}: ${a}`);
      }
    }
  });
});

describe('the daily user-dates job', () => {
  test('00:05 in the configured offset, as a UTC cron', () => {
    assert.deepEqual(dailyUtcCron(5, 540), { hour: 15, minute: 5 }); // Japan: 15:05 UTC the day before
    assert.deepEqual(dailyUtcCron(5, -300), { hour: 5, minute: 5 }); // UTC-05:00
    assert.deepEqual(dailyUtcCron(5, 330), { hour: 18, minute: 35 }); // India: 18:35 UTC the day before
    assert.deepEqual(dailyUtcCron(5, 345), { hour: 18, minute: 20 }); // Nepal
    assert.deepEqual(dailyUtcCron(5, -570), { hour: 9, minute: 35 }); // Marquesas, UTC-09:30
    assert.deepEqual(dailyUtcCron(5, 0), { hour: 0, minute: 5 });
    assert.deepEqual(dailyUtcCron(5, 840), { hour: 10, minute: 5 }); // the range's ends
    assert.deepEqual(dailyUtcCron(5, -720), { hour: 12, minute: 5 });
    assert.deepEqual(dailyUtcCron(0, 0), { hour: 0, minute: 0 });
    assert.equal(utcOffsetLabel(540), 'UTC+09:00');
    assert.equal(utcOffsetLabel(-570), 'UTC-09:30');
  });
  const rule = (t: Template) => {
    const scheduler = functionId(t, 'Scheduler');
    return only(Object.values(resourcesOf(t, 'AWS::Events::Rule')).filter((r) => (r.Properties.Targets ?? []).some((x: any) =>
      x.Input === JSON.stringify({ job: 'user-dates' }) && x.Arn['Fn::GetAtt'][0] === scheduler)), 'user-dates rule').Properties;
  };
  test('the rule: the scheduler with {"job": "user-dates"}, retries, at the cron of the configured offset', () => {
    const r = rule(dev.template);
    assert.equal(r.ScheduleExpression, 'cron(5 15 * * ? *)');
    assert.deepEqual(r.Targets[0].RetryPolicy, { MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 3600 });
    assert.equal(r.State, 'ENABLED');
    for (const [offset, cron] of [[-300, 'cron(5 5 * * ? *)'], [330, 'cron(35 18 * * ? *)'], [540, 'cron(5 15 * * ? *)']] as const) {
      const c = configWith((x) => { x.environments.dev.identity.provisioningUtcOffsetMinutes = offset; });
      const t = build({ config: c }).template;
      assert.equal(rule(t).ScheduleExpression, cron, String(offset));
      for (const fn of ['Scheduler', 'AdminApi', 'Provisioner']) {
        assert.equal(envOf(t, fn).GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES, String(offset), `${fn} ${offset}`);
      }
    }
  });
  test('the hourly sweep is still there, beside it', () => {
    dev.template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 hour)',
      Targets: [Match.objectLike({ Input: JSON.stringify({ job: 'sweep-reply-queues' }) })],
    });
  });
});

describe('admin scopes and groups', () => {
  const policy = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'policy', 'scopes.json'), 'utf8'));
  const ADMIN_SCOPES = ['admin:users', 'admin:apikeys', 'admin:billing'];
  const READ_SCOPES = ADMIN_SCOPES.map((sc) => `${sc}:read`);
  test('each admin scope (users, API keys, billing) includes its :read scope; none is under "all"', () => {
    for (const sc of ADMIN_SCOPES) assert.deepEqual(policy.scopes[sc], [`${sc}:read`], sc);
    const under = (scope: string): string[] => (policy.scopes[scope] ?? []).flatMap((c: string) => [c, ...under(c)]);
    assert.ok(!under('all').some((sc) => sc.startsWith('admin:')), JSON.stringify(under('all')));
    assert.deepEqual(policy.groups['gateway-admins'], ADMIN_SCOPES);
    assert.deepEqual(policy.groups['gateway-admin-readers'], READ_SCOPES);
  });
  test('the pool has both groups; the resource server and the app client every admin scope', () => {
    const groups = Object.values(resourcesOf(dev.template, 'AWS::Cognito::UserPoolGroup')).map((g) => g.Properties.GroupName);
    for (const g of ['gateway-admins', 'gateway-admin-readers']) assert.ok(groups.includes(g), g);
    const server = Object.values(resourcesOf(dev.template, 'AWS::Cognito::UserPoolResourceServer'))[0];
    const scopes = server.Properties.Scopes.map((s: any) => s.ScopeName);
    const client = JSON.stringify(Object.values(resourcesOf(dev.template, 'AWS::Cognito::UserPoolClient'))[0].Properties.AllowedOAuthScopes);
    for (const sc of [...ADMIN_SCOPES, ...READ_SCOPES]) {
      assert.ok(scopes.includes(sc), sc);
      assert.ok(client.includes(`"/${sc}"`), `${sc} in ${client}`);
    }
  });
});

describe('the bootstrap administrator', () => {
  const customResources = (t: Template) => Object.entries(resourcesOf(t, 'Custom::BootstrapAdmin'));
  const call = (r: any) => JSON.parse((r.Properties.Create['Fn::Join'][1] as any[])
    .map((x) => (typeof x === 'string' ? x : `<${x.Ref}>`)).join(''));
  test('none where bootstrapAdmin is null (every shipped environment): no custom resource, no provider function', () => {
    for (const t of [dev.template, prod.template, build({ envName: 'staging' }).template]) {
      assert.deepEqual(customResources(t), []);
      assert.equal(Object.keys(resourcesOf(t, 'AWS::Lambda::Function')).filter((id) => id.startsWith('AWS679')).length, 0);
    }
  });
  test('configured: the user (verified e-mail, the temporary password mailed), then membership of gateway-admins', () => {
    const t = staging.template;
    const crs = customResources(t);
    assert.equal(crs.length, 2);
    const pool = `<${idOf(t, 'AWS::Cognito::UserPool', 'UserPool')}>`;
    const [userId, user] = only(crs.filter(([, r]) => call(r).action === 'AdminCreateUser'), 'create');
    assert.deepEqual(call(user), {
      service: 'CognitoIdentityProvider',
      action: 'AdminCreateUser',
      parameters: {
        UserPoolId: pool,
        Username: ADMIN.username,
        UserAttributes: [{ Name: 'email', Value: ADMIN.email }, { Name: 'email_verified', Value: 'true' }],
        DesiredDeliveryMediums: ['EMAIL'],
      },
      physicalResourceId: { id: ADMIN.username },
      outputPaths: ['User.Username'],
      logApiResponseData: false,
    });
    const [, group] = only(crs.filter(([, r]) => call(r).action === 'AdminAddUserToGroup'), 'group');
    assert.deepEqual(call(group).parameters, { UserPoolId: pool, Username: ADMIN.username, GroupName: 'gateway-admins' });
    const dependsOn = list<string>((group as any).DependsOn);
    assert.ok(dependsOn.includes(userId) && dependsOn.includes(idOf(t, 'AWS::Cognito::UserPoolGroup', 'GroupGatewayAdmins')), JSON.stringify(dependsOn));
    // Create only: an update or a delete of the resource calls nothing (the user is never deleted by the stack).
    for (const [, r] of crs) assert.deepEqual([r.Properties.Update, r.Properties.Delete], [undefined, undefined]);
    assert.equal(t.toJSON().Outputs.BootstrapAdminUsername.Value, ADMIN.username);
  });
  test('least privilege: the two calls on the pool\'s ARN, its own log group, no managed policy', () => {
    const t = staging.template;
    const provider = only(Object.entries(resourcesOf(t, 'AWS::Lambda::Function')).filter(([id]) => id.startsWith('AWS679')), 'provider');
    const roleId = provider[1].Properties.Role['Fn::GetAtt'][0];
    assert.match(roleId, /^BootstrapAdminRole/);
    const role = resourcesOf(t, 'AWS::IAM::Role')[roleId];
    assert.equal(role.Properties.ManagedPolicyArns, undefined);
    const statements = Object.values(resourcesOf(t, 'AWS::IAM::Policy'))
      .filter((p) => p.Properties.Roles.some((r: any) => r.Ref === roleId))
      .flatMap((p) => p.Properties.PolicyDocument.Statement);
    const logs = { 'Fn::GetAtt': [idOf(t, 'AWS::Logs::LogGroup', 'BootstrapAdminLogs'), 'Arn'] };
    assert.deepEqual(statements.map((s) => [list<string>(s.Action).sort(), s.Resource]).sort((a, b) => JSON.stringify(a) < JSON.stringify(b) ? -1 : 1), [
      [['cognito-idp:AdminAddUserToGroup'], poolArn(t)],
      [['cognito-idp:AdminCreateUser'], poolArn(t)],
      [['logs:CreateLogStream', 'logs:PutLogEvents'], logs],
    ]);
    const group = resourcesOf(t, 'AWS::Logs::LogGroup')[logs['Fn::GetAtt'][0]];
    assert.equal(group.Properties.RetentionInDays, 365);
    assert.deepEqual(group.Properties.KmsKeyId, keyArn(t));
    assert.deepEqual(provider[1].Properties.LoggingConfig, { LogGroup: { Ref: logs['Fn::GetAtt'][0] } });
  });
  test('a new user name is a new resource (that user is created); the same name keeps its resource', () => {
    const other = build({ envName: 'staging', region: 'ap-northeast-1', config: configWith((c) => {
      c.environments.staging.identity.bootstrapAdmin = { ...ADMIN, username: 'second.admin' };
    }) }).template;
    const ids = (t: Template) => customResources(t).map(([id]) => id).sort();
    const sameName = build({ envName: 'staging', region: 'ap-northeast-1', config: configWith((c) => {
      c.environments.staging.identity.bootstrapAdmin = { ...ADMIN, email: 'changed@example.com' };
    }) }).template;
    assert.deepEqual(ids(sameName), ids(staging.template));
    assert.ok(ids(other).every((id) => !ids(staging.template).includes(id)));
  });
  test('cdk-nag: no unsuppressed finding with it', () => {
    const a = Annotations.fromStack(staging.stack);
    assert.deepEqual([...a.findError('*', Match.stringLikeRegexp('AwsSolutions-.*')),
      ...a.findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'))].map((e) => `${e.id}: ${e.entry.data}`), []);
  });
});

describe('configuration', () => {
  const shipped = (): any => structuredClone(config);
  test('the shipped values: revocation cache dev 5, staging 15, prod 30; offset 540; no bootstrap administrator', () => {
    const secs: Record<EnvironmentName, number> = { dev: 5, staging: 15, prod: 30 };
    for (const e of ['dev', 'staging', 'prod'] as const) {
      assert.equal(config.environments[e].identity.revocationCacheSeconds, secs[e]);
      assert.equal(config.environments[e].identity.provisioningUtcOffsetMinutes, 540);
      assert.equal(config.environments[e].identity.bootstrapAdmin, null);
    }
  });
  test('out-of-range or malformed identity settings are refused, each named', () => {
    const c = shipped();
    c.environments.dev.identity.revocationCacheSeconds = 0;
    c.environments.staging.identity.revocationCacheSeconds = 301;
    c.environments.prod.identity.provisioningUtcOffsetMinutes = 900;
    c.environments.dev.identity.bootstrapAdmin = { username: 'admin@example.com', email: 'not-an-address' };
    c.environments.staging.identity.bootstrapAdmin = { username: 'admin', email: 'a@example.com', password: 'x' };
    delete c.environments.prod.identity.bootstrapAdmin;
    assert.throws(() => parseConfig(c), (e: Error) => {
      for (const part of [
        'config.environments.dev.identity.revocationCacheSeconds: must be an integer in [1, 300]',
        'config.environments.staging.identity.revocationCacheSeconds: must be an integer in [1, 300]',
        'config.environments.prod.identity.provisioningUtcOffsetMinutes: must be an integer in [-720, 840]',
        'config.environments.dev.identity.bootstrapAdmin.username: must be 1 to 128 letters',
        'config.environments.dev.identity.bootstrapAdmin.email: must be an e-mail address',
        'config.environments.staging.identity.bootstrapAdmin.password: unknown key',
        'config.environments.prod.identity.bootstrapAdmin: missing',
      ]) assert.ok(e.message.includes(part), `${part} not in\n${e.message}`);
      return true;
    });
  });
  test('the bounds themselves are accepted', () => {
    const c = shipped();
    c.environments.dev.identity.revocationCacheSeconds = 1;
    c.environments.staging.identity.revocationCacheSeconds = 300;
    c.environments.dev.identity.provisioningUtcOffsetMinutes = -720;
    c.environments.prod.identity.provisioningUtcOffsetMinutes = 840;
    c.environments.prod.identity.bootstrapAdmin = { username: 'it-admin_01', email: 'it-admin@example.com' };
    assert.doesNotThrow(() => parseConfig(c));
  });
});

/** GATEWAY_USAGE_PLANS (a Fn::Join of JSON text and plan Refs) read back as JSON, each id as its Ref. */
function usagePlans(value: unknown): Record<string, { id: { Ref: string }; rate_limit: number; burst_limit: number; quota_per_day: number }> {
  const parts = (value as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
  const text = parts.map((p) => (typeof p === 'string' ? p : `@@${(p as { Ref: string }).Ref}@@`)).join('');
  return JSON.parse(text.replace(/"@@([A-Za-z0-9]+)@@"/g, '{"Ref":"$1"}'));
}

/** Each configured department's plan, as the admin API and scheduler should be told of it. */
function configuredPlans(t: Template) {
  const planIds = Object.entries(t.findResources('AWS::ApiGateway::UsagePlan'));
  return Object.fromEntries(Object.entries(config.departments).map(([dept, d]) => {
    const [id] = planIds.find(([, r]) => (r as { Properties: { UsagePlanName: string } }).Properties.UsagePlanName.endsWith(`-${dept}`))!;
    return [dept, { id: { Ref: id }, rate_limit: d.rateLimit, burst_limit: d.burstLimit, quota_per_day: d.quotaPerDay }];
  }));
}
