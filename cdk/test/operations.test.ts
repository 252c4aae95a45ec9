import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { aws_cloudwatch as cw } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { EnvironmentName, GatewayConfig, loadConfig, parseConfig } from '../lib/config';
import { parseCreateTable } from '../lib/athena-table';
import { FUNCTIONS } from '../lib/gateway-stack';
import { pascal } from '../lib/names';
import {
  ATHENA_BYTES_SCANNED_CUTOFF, ATHENA_RESULTS_DAYS, INCOMPLETE_COUNT_FIELD, INCOMPLETE_LOG_MESSAGE, THRESHOLDS,
} from '../lib/operations';
import { build, functionId, jsonFilterMatches, jsonPath, list, resourcesOf, tracingCalls } from './helpers';

const repo = path.join(__dirname, '..', '..');
const config = loadConfig();
function configWith(change: (c: any) => void): GatewayConfig {
  const c = structuredClone(config) as any;
  change(c);
  return parseConfig(c);
}
/** prod with every account toggle on. */
const allToggles = configWith((c) => Object.assign(c.environments.prod.operations, { guardDuty: true, securityHub: true, awsConfig: true }));

const dev = build().template;
const prodHome = build({ envName: 'prod' }).template;
const prodOther = build({ envName: 'prod', region: 'us-west-2' }).template;

const ofType = (t: Template, type: string) => Object.entries(resourcesOf(t, type));
const idOf = (t: Template, type: string, prefix: string) => {
  const ids = ofType(t, type).map(([id]) => id).filter((id) => id.startsWith(prefix));
  assert.equal(ids.length, 1, `${prefix}: ${ids.join(', ')}`);
  return ids[0];
};
const byId = (t: Template, type: string, prefix: string) => resourcesOf(t, type)[idOf(t, type, prefix)];
/** The metric filters publishing `metricName`. */
const filtersOf = (t: Template, metricName: string) => ofType(t, 'AWS::Logs::MetricFilter')
  .filter(([, f]) => f.Properties.MetricTransformations[0].MetricName === metricName);
const alarmsOf = (t: Template) => ofType(t, 'AWS::CloudWatch::Alarm');
const fnRef = (t: Template, constructId: string) => ({ Ref: functionId(t, constructId) });
const statementsOfRole = (t: Template, rolePrefix: string) => {
  const roleId = idOf(t, 'AWS::IAM::Role', rolePrefix);
  return Object.values(resourcesOf(t, 'AWS::IAM::Policy'))
    .filter((p) => p.Properties.Roles.some((r: any) => r.Ref === roleId))
    .flatMap((p) => p.Properties.PolicyDocument.Statement);
};
const nagFindings = (stack: any) => {
  const a = Annotations.fromStack(stack);
  return [...a.findError('*', Match.stringLikeRegexp('AwsSolutions-.*')), ...a.findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'))]
    .map((e) => `${e.id}: ${e.entry.data}`);
};

describe('alarm topic', () => {
  const topicId = idOf(dev, 'AWS::SNS::Topic', 'AlarmTopic');

  test('encrypted with a key of its own that CloudWatch may use (the AWS-managed SNS key refuses alarms)', () => {
    const topic = resourcesOf(dev, 'AWS::SNS::Topic')[topicId];
    const keyId = topic.Properties.KmsMasterKeyId['Fn::GetAtt'][0];
    assert.match(keyId, /^AlarmTopicKey/);
    const key = resourcesOf(dev, 'AWS::KMS::Key')[keyId];
    assert.equal(key.Properties.EnableKeyRotation, true);
    const cloudwatch = key.Properties.KeyPolicy.Statement.filter((s: any) => s.Principal?.Service === 'cloudwatch.amazonaws.com');
    assert.equal(cloudwatch.length, 1);
    assert.deepEqual(cloudwatch[0].Action, ['kms:Decrypt', 'kms:GenerateDataKey*']);
    assert.ok(!JSON.stringify(key.Properties.KeyPolicy).includes('events.amazonaws.com'), 'EventBridge goes through its role');
  });

  test('TLS only; CloudWatch may publish for this account\'s alarms only', () => {
    const [, policy] = ofType(dev, 'AWS::SNS::TopicPolicy')[0];
    const st = policy.Properties.PolicyDocument.Statement;
    assert.ok(st.some((s: any) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'));
    const allow = st.filter((s: any) => s.Effect === 'Allow');
    assert.equal(allow.length, 1);
    assert.deepEqual(allow[0].Principal, { Service: 'cloudwatch.amazonaws.com' });
    assert.deepEqual(allow[0].Condition.StringEquals, { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } });
    assert.match(JSON.stringify(allow[0].Condition.ArnLike['aws:SourceArn']), /:cloudwatch:.*:alarm:\*"\]\]\}$/);
  });

  test('one e-mail subscription per configured address', () => {
    assert.equal(ofType(dev, 'AWS::SNS::Subscription').length, config.environments.dev.operations.alarmEmails.length);
    const subs = ofType(prodHome, 'AWS::SNS::Subscription').map(([, s]) => s.Properties);
    assert.deepEqual(subs.map((s) => s.Endpoint).sort(), [...config.environments.prod.operations.alarmEmails].sort());
    for (const s of subs) assert.equal(s.Protocol, 'email');
  });

  test('every alarm notifies the topic going into alarm and back to OK, those added by later modules too', () => {
    for (const t of [dev, prodHome]) {
      const alarms = alarmsOf(t);
      assert.ok(alarms.length > 20);
      const topic = { Ref: idOf(t, 'AWS::SNS::Topic', 'AlarmTopic') };
      for (const [id, a] of alarms) {
        assert.deepEqual(a.Properties.AlarmActions, [topic], id);
        assert.deepEqual(a.Properties.OKActions, [topic], id);
      }
    }
    const late = build({
      extra: (s) => new cw.Alarm(s, 'AddedLater', {
        metric: new cw.Metric({ namespace: 'AWS/ApiGateway', metricName: '5XXError' }), threshold: 1, evaluationPeriods: 1,
      }),
    }).template;
    const added = byId(late, 'AWS::CloudWatch::Alarm', 'AddedLater');
    assert.deepEqual(added.Properties.AlarmActions, [{ Ref: idOf(late, 'AWS::SNS::Topic', 'AlarmTopic') }]);
  });
});

describe('alarms', () => {
  const alarms = alarmsOf(dev).map(([, a]) => a.Properties);
  const on = (metricName: string, dimension: any) => alarms.filter((a) =>
    a.MetricName === metricName && JSON.stringify(a.Dimensions ?? []).includes(JSON.stringify(dimension)));

  test('throttles of every function, errors of every function (the digest job has its hourly one)', () => {
    for (const name of FUNCTIONS) {
      const fn = fnRef(dev, pascal(name));
      const throttles = on('Throttles', fn);
      assert.equal(throttles.length, 1, `${name} throttles`);
      assert.equal(throttles[0].Threshold, 1);
      const errors = on('Errors', fn);
      assert.equal(errors.length, 1, `${name} errors`);
      assert.equal(errors[0].Threshold, 1);
      assert.equal(errors[0].ComparisonOperator, 'GreaterThanOrEqualToThreshold');
    }
    assert.match(on('Errors', fnRef(dev, 'Authorizer'))[0].AlarmDescription, /authorizer errors/);
    assert.equal(on('Errors', fnRef(dev, 'AuditDigest'))[0].Period, 3600);
  });

  test('p99 duration of the routes and the dispatcher, near the function timeout', () => {
    for (const id of ['AzureOpenai', 'BedrockClaude', 'Gemini', 'Dispatcher']) {
      const d = on('Duration', fnRef(dev, id));
      assert.equal(d.length, 1, id);
      assert.equal(d[0].ExtendedStatistic, 'p99');
      assert.equal(d[0].Threshold, config.functions.routeTimeoutSecs * 1000 * THRESHOLDS.durationShareOfTimeout);
      assert.equal(d[0].EvaluationPeriods, 3);
    }
  });

  test('audit backlog: age of the oldest audit event and events waiting; requests waiting for a dispatcher', () => {
    const queues = resourcesOf(dev, 'AWS::SQS::Queue');
    const queueId = (name: string) => Object.keys(queues).find((id) => queues[id].Properties.QueueName === name)!;
    const audit = { 'Fn::GetAtt': [queueId('llm-gateway-dev-audit'), 'QueueName'] };
    const age = on('ApproximateAgeOfOldestMessage', audit);
    assert.equal(age.length, 1);
    assert.equal(age[0].Threshold, 15 * 60);
    assert.equal(age[0].Statistic, 'Maximum');
    const visible = on('ApproximateNumberOfMessagesVisible', audit);
    assert.equal(visible.length, 1);
    assert.equal(visible[0].Threshold, THRESHOLDS.auditVisibleMessages);
    for (const p of ['azure-openai', 'gemini']) {
      const waiting = on('ApproximateAgeOfOldestMessage', { 'Fn::GetAtt': [queueId(`llm-gateway-dev-requests-${p}`), 'QueueName'] });
      assert.equal(waiting.length, 1, p);
      assert.equal(waiting[0].Threshold, THRESHOLDS.requestOldestMessageSecs);
    }
  });

  test('the admin API function has its throttles and errors alarms, like every function', () => {
    assert.ok((FUNCTIONS as readonly string[]).includes('admin-api'));
    const fn = fnRef(dev, 'AdminApi');
    assert.equal(on('Throttles', fn).length, 1);
    assert.equal(on('Errors', fn).length, 1);
  });

  // Every table of the stack, each through the same alarm code (lib/operations.ts), with the operations its
  // callers use: the usage counters are written in transactions, and the scheduler deletes a budget alert's
  // claim when its mail fails.
  const ITEM_OPERATIONS = ['GetItem', 'PutItem', 'Query', 'UpdateItem'];
  const tables: Record<string, string[]> = {
    ApiKeysTable: ITEM_OPERATIONS,
    DepartmentsTable: ITEM_OPERATIONS,
    RevocationsTable: ITEM_OPERATIONS,
    UsageTable: [...ITEM_OPERATIONS, 'DeleteItem'].sort(),
  };
  test('the stack\'s tables are these', () => {
    assert.deepEqual(ofType(dev, 'AWS::DynamoDB::Table').map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort(), Object.keys(tables));
  });
  for (const [tableId, operations] of Object.entries(tables)) {
    test(`${tableId}: throttled requests and system errors of ${operations.join(', ')}, at 1 in 5 minutes`, () => {
      const table = { Ref: idOf(dev, 'AWS::DynamoDB::Table', tableId) };
      for (const [id, metricName] of [[`${tableId}Throttles`, 'ThrottledRequests'], [`${tableId}SystemErrors`, 'SystemErrors']]) {
        const a = byId(dev, 'AWS::CloudWatch::Alarm', id).Properties;
        assert.equal(a.Threshold, 1, id);
        assert.equal(a.ComparisonOperator, 'GreaterThanOrEqualToThreshold', id);
        assert.equal(a.TreatMissingData, 'notBreaching', id);
        const stats = a.Metrics.filter((m: any) => m.MetricStat).map((m: any) => m.MetricStat);
        assert.deepEqual(stats.map((m: any) => m.Metric.Dimensions.find((d: any) => d.Name === 'Operation').Value).sort(),
          operations, id);
        for (const m of stats) {
          assert.deepEqual([m.Metric.Namespace, m.Metric.MetricName, m.Stat, m.Period], ['AWS/DynamoDB', metricName, 'Sum', 300], id);
          assert.deepEqual(m.Metric.Dimensions.find((d: any) => d.Name === 'TableName').Value, table, id);
        }
        // The expression sums them and is what the alarm compares.
        const returned = a.Metrics.filter((m: any) => m.ReturnData !== false);
        assert.equal(returned.length, 1, id);
        assert.equal(returned[0].Expression, stats.map((_: any, i: number) => a.Metrics.filter((m: any) => m.MetricStat)[i].Id).join(' + '), id);
      }
    });
  }

  test('the metric filters: incomplete requests, budget refusals (one per route), unsettled usage', () => {
    assert.deepEqual(ofType(dev, 'AWS::Logs::MetricFilter').map(([, f]) => f.Properties.MetricTransformations[0].MetricName).sort(),
      ['BudgetRefusals', 'BudgetRefusals', 'BudgetRefusals', 'IncompleteRequests', 'UsageNotSettled']);
  });

  test('incomplete audit outcomes: a metric filter on the digest job\'s log group, alarm at 1 in an hour', () => {
    const [[, filter]] = filtersOf(dev, 'IncompleteRequests');
    const digest = resourcesOf(dev, 'AWS::Lambda::Function')[functionId(dev, 'AuditDigest')];
    assert.deepEqual(filter.Properties.LogGroupName, digest.Properties.LoggingConfig.LogGroup);
    const [m] = filter.Properties.MetricTransformations;
    const alarm = alarms.filter((a) => a.MetricName === m.MetricName && a.Namespace === m.MetricNamespace);
    assert.equal(alarm.length, 1);
    assert.equal(alarm[0].Statistic, 'Sum');
    assert.equal(alarm[0].Period, 3600);
    assert.equal(alarm[0].Threshold, 1);
    assert.equal(alarm[0].ComparisonOperator, 'GreaterThanOrEqualToThreshold');
    assert.equal(alarm[0].TreatMissingData, 'notBreaching');
  });
});

describe('the incomplete-requests filter reads what the digest job logs', () => {
  const [[, filter]] = filtersOf(dev, 'IncompleteRequests');
  const pattern: string = filter.Properties.FilterPattern;
  const valuePath: string = filter.Properties.MetricTransformations[0].MetricValue;

  test('the message and count field are the ones in functions/audit-digest/src/lib.rs', () => {
    const src = readFileSync(path.join(repo, 'functions', 'audit-digest', 'src', 'lib.rs'), 'utf8');
    const call = tracingCalls(src).filter((c) => c.args.includes(INCOMPLETE_LOG_MESSAGE));
    assert.equal(call.length, 1, 'one log call carries the message');
    const [{ level, args, message }] = call;
    assert.equal(level, 'warn');
    assert.equal(message, INCOMPLETE_LOG_MESSAGE, 'the message is the last argument');
    assert.match(args, new RegExp(`\\b${INCOMPLETE_COUNT_FIELD}\\s*=\\s*events\\.len\\(\\)`), 'a numeric count field');
    assert.ok(pattern.includes(`"${INCOMPLETE_LOG_MESSAGE}"`));
    assert.equal(valuePath, `$.fields.${INCOMPLETE_COUNT_FIELD}`);
  });

  test('the JSON layout is tracing-subscriber\'s nested one, printed as is by Lambda', () => {
    const telemetry = readFileSync(path.join(repo, 'shared', 'src', 'telemetry.rs'), 'utf8');
    assert.match(telemetry, /\.json\(\)/);
    assert.doesNotMatch(telemetry, /flatten_event\(\s*true/, 'flattened fields would be at the top level, not under "fields"');
    // Lambda's JSON log format would wrap each line in its own object.
    for (const [id, f] of ofType(dev, 'AWS::Lambda::Function')) {
      assert.ok([undefined, 'Text'].includes(f.Properties.LoggingConfig.LogFormat), id);
    }
  });

  test('matches a line as the job prints it and yields its count; other lines do not match', () => {
    // The shape tracing-subscriber's JSON formatter gives that call (no time, no span: shared/src/telemetry.rs).
    const line = JSON.parse(JSON.stringify({
      level: 'WARN',
      fields: {
        message: INCOMPLETE_LOG_MESSAGE,
        key: 'audit/year=2026/month=11/day=25/hour=10/incomplete-2026-11-25T08.jsonl.gz',
        [INCOMPLETE_COUNT_FIELD]: 3,
        checked: '2026-11-25T08',
      },
      target: 'audit_digest',
    }));
    assert.equal(jsonFilterMatches(pattern, line), true);
    assert.equal(jsonPath(line, valuePath), 3);
    for (const other of [
      { level: 'INFO', fields: { message: 'audit digest written', key: 'digests/x' }, target: 'audit_digest' },
      { level: 'INFO', fields: { message: 'audit digest run', summary: '...' }, target: 'audit_digest' },
    ]) assert.equal(jsonFilterMatches(pattern, other), false);
  });
});

describe('dashboard', () => {
  test('one per stack, named with the region, showing every function, queue and the incomplete requests', () => {
    const boards = ofType(dev, 'AWS::CloudWatch::Dashboard');
    assert.equal(boards.length, 1);
    const d = boards[0][1].Properties;
    assert.equal(d.DashboardName, 'llm-gateway-dev-us-east-1');
    const body = JSON.stringify(d.DashboardBody);
    for (const name of FUNCTIONS) assert.ok(body.includes(`{\\"Ref\\":\\"${functionId(dev, pascal(name))}\\"}`) || body.includes(functionId(dev, pascal(name))), name);
    for (const id of Object.keys(resourcesOf(dev, 'AWS::SQS::Queue'))) assert.ok(body.includes(id), id);
    for (const metric of ['Throttles', 'Errors', 'Duration', 'ConcurrentExecutions', 'ApproximateAgeOfOldestMessage', 'IncompleteRequests']) {
      assert.ok(body.includes(metric), metric);
    }
    assert.ok(body.includes('p99'));
  });
});

describe('CloudTrail', () => {
  const trailOf = (t: Template) => ofType(t, 'AWS::CloudTrail::Trail');

  test('none where the configuration says so (dev), nor in the other regions without data events (staging)', () => {
    assert.equal(trailOf(dev).length, 0);
    assert.equal(trailOf(build({ envName: 'staging', region: 'us-west-2' }).template).length, 0);
  });

  test('the home region: a multi-region trail of management events, log file validation, KMS', () => {
    const staging = build({ envName: 'staging' }).template;
    const [[, trail]] = trailOf(staging);
    const p = trail.Properties;
    assert.equal(p.IsMultiRegionTrail, true);
    assert.equal(p.IncludeGlobalServiceEvents, true);
    assert.equal(p.EnableLogFileValidation, true);
    assert.equal(p.IsLogging, true);
    assert.match(p.KMSKeyId['Fn::GetAtt'][0], /^AccountLogsKey/);
    assert.deepEqual(p.EventSelectors, [{ IncludeManagementEvents: true, ReadWriteType: 'All' }]);
    assert.equal(p.CloudWatchLogsLogGroupArn, undefined, 'not delivered to CloudWatch Logs (README)');
  });

  test('with data events: the audit and payload buckets\' objects and every gateway function\'s invocations', () => {
    for (const [t, home] of [[prodHome, true], [prodOther, false]] as const) {
      const [[, trail]] = trailOf(t);
      const p = trail.Properties;
      assert.equal(p.IsMultiRegionTrail, home);
      const [selector] = p.EventSelectors;
      assert.equal(selector.IncludeManagementEvents, home, 'management events once, from the home region');
      const s3 = selector.DataResources.find((d: any) => d.Type === 'AWS::S3::Object');
      assert.deepEqual(s3.Values.map((v: any) => v['Fn::Join'][1][0]['Fn::GetAtt'][0].replace(/[A-F0-9]{8}$/, '')), ['AuditBucket', 'PayloadBucket']);
      const fns = selector.DataResources.find((d: any) => d.Type === 'AWS::Lambda::Function');
      assert.deepEqual(fns.Values.map((v: any) => v['Fn::GetAtt'][0]).sort(),
        FUNCTIONS.map((f) => functionId(t, pascal(f))).sort());
    }
  });

  test('its bucket: KMS, public access blocked, TLS only, access-logged, versioned, kept at least a year; only the trail may write', () => {
    const t = prodHome;
    const bucketId = idOf(t, 'AWS::S3::Bucket', 'TrailBucket');
    const b = resourcesOf(t, 'AWS::S3::Bucket')[bucketId].Properties;
    assert.equal(b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, 'aws:kms');
    assert.deepEqual(Object.values(b.PublicAccessBlockConfiguration), [true, true, true, true]);
    assert.equal(b.VersioningConfiguration.Status, 'Enabled');
    assert.match(b.LoggingConfiguration.DestinationBucketName.Ref, /^AccessLogsBucket/);
    const rule = b.LifecycleConfiguration.Rules[0];
    assert.ok(rule.ExpirationInDays >= Math.max(365, config.environments.prod.auditRetentionDays));
    const policy = Object.values(resourcesOf(t, 'AWS::S3::BucketPolicy')).find((x) => x.Properties.Bucket.Ref === bucketId)!;
    const st = policy.Properties.PolicyDocument.Statement;
    assert.ok(st.some((s: any) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'));
    const trailArn = /:cloudtrail:.*:trail\/llm-gateway-prod-trail"\]\]\}$/;
    for (const s of st.filter((s: any) => s.Principal?.Service === 'cloudtrail.amazonaws.com')) {
      assert.match(JSON.stringify(s.Condition.StringEquals['aws:SourceArn']), trailArn);
    }
    const key = byId(t, 'AWS::KMS::Key', 'AccountLogsKey');
    const ct = key.Properties.KeyPolicy.Statement.filter((s: any) => s.Principal?.Service === 'cloudtrail.amazonaws.com');
    assert.equal(ct.length, 2);
    for (const s of ct) assert.match(JSON.stringify(s.Condition.StringEquals['aws:SourceArn']), trailArn);
  });
});

describe('Glue and Athena', () => {
  const sql = readFileSync(path.join(repo, 'docs', 'athena', 'audit_events.sql'), 'utf8');
  const table = byId(dev, 'AWS::Glue::Table', 'AuditEventsTable').Properties;
  const input = table.TableInput;
  const auditBucketRef = { Ref: idOf(dev, 'AWS::S3::Bucket', 'AuditBucket') };
  // Read from the SQL file here line by line, independently of lib/athena-table.ts.
  const lines = sql.split('\n').map((l) => l.replace(/--.*$/, ''));
  const start = lines.findIndex((l) => /CREATE EXTERNAL TABLE/.test(l));
  const partitionLine = lines.findIndex((l) => /PARTITIONED BY/.test(l));
  const sqlColumns: [string, string][] = [];
  let pending = '';
  for (const l of lines.slice(start + 1, partitionLine)) {
    pending += l.trim();
    // A column ends where its angle brackets balance and a comma (or the closing parenthesis) follows.
    const opens = (pending.match(/</g) ?? []).length;
    const closes = (pending.match(/>/g) ?? []).length;
    if (pending && opens === closes) {
      const m = /^`?(\w+)`?\s*(.+?),?$/.exec(pending.replace(/^\)$/, ''));
      if (m) sqlColumns.push([m[1], m[2].replace(/\s+/g, '')]);
      pending = '';
    }
  }
  const sqlPartitions = [.../PARTITIONED BY \(([^)]*)\)/.exec(sql)![1].matchAll(/(\w+)\s+(\w+)/g)].map((m) => [m[1], m[2]]);
  const sqlProps = (section: string) => Object.fromEntries([...new RegExp(`${section} \\(([\\s\\S]*?)\\)\\s*(;|STORED)`).exec(sql)![1]
    .matchAll(/'([^']+)'\s*=\s*'([^']*)'/g)].map((m) => [m[1], m[2]]));
  const withBucket = (s: string) => {
    const [before, after] = s.split('<audit-bucket>');
    return { 'Fn::Join': ['', [before, auditBucketRef, after]] };
  };

  test('a database per environment and the audit table in it', () => {
    const db = byId(dev, 'AWS::Glue::Database', 'AuditDatabase').Properties;
    assert.equal(db.DatabaseInput.Name, 'llm_gateway_dev');
    assert.equal(table.DatabaseName, 'llm_gateway_dev');
    assert.equal(input.Name, /CREATE EXTERNAL TABLE IF NOT EXISTS (\w+)/.exec(sql)![1]);
    assert.equal(input.TableType, 'EXTERNAL_TABLE');
  });

  test('columns, partitions, SerDe, formats, location and table properties are those of audit_events.sql', () => {
    assert.ok(sqlColumns.length >= 20, JSON.stringify(sqlColumns));
    assert.deepEqual(input.StorageDescriptor.Columns.map((c: any) => [c.Name, c.Type]), sqlColumns);
    assert.deepEqual(input.PartitionKeys.map((c: any) => [c.Name, c.Type]), sqlPartitions);
    const sd = input.StorageDescriptor;
    assert.equal(sd.SerdeInfo.SerializationLibrary, /ROW FORMAT SERDE '([^']+)'/.exec(sql)![1]);
    assert.deepEqual(sd.SerdeInfo.Parameters, sqlProps('WITH SERDEPROPERTIES'));
    assert.equal(sd.InputFormat, /INPUTFORMAT '([^']+)'/.exec(sql)![1]);
    assert.equal(sd.OutputFormat, /OUTPUTFORMAT '([^']+)'/.exec(sql)![1]);
    assert.deepEqual(sd.Location, withBucket(/LOCATION '([^']+)'/.exec(sql)![1]));
    const props = sqlProps('TBLPROPERTIES');
    assert.ok(props['projection.enabled'] === 'true' && props['storage.location.template']);
    const expected = Object.fromEntries(Object.entries(props).map(([k, v]) => [k, v.includes('<audit-bucket>') ? withBucket(v) : v]));
    assert.deepEqual(input.Parameters, { EXTERNAL: 'TRUE', ...expected });
    assert.equal(sd.Columns.find((c: any) => c.Name === 'record').Comment, 'authorized | accepted | final | incomplete (NULL in schema_version 1: final)');
  });

  test('every property of the audit event schema is a column, nested objects field by field, with a matching type', () => {
    const schema = JSON.parse(readFileSync(path.join(repo, 'schemas', 'audit-event.schema.json'), 'utf8'));
    const columns = new Map<string, string>(input.StorageDescriptor.Columns.map((c: any) => [c.Name, c.Type]));
    // No exceptions: every top-level property has its column.
    assert.deepEqual(Object.keys(schema.properties).filter((p) => !columns.has(p)), []);
    assert.deepEqual([...columns.keys()].filter((c) => !(c in schema.properties)), [], 'no column outside the schema');
    const objectOf = (s: any): any => s.properties ? s : (s.oneOf ?? []).find((x: any) => x.properties);
    const hive = (s: any, where: string): string => {
      const obj = objectOf(s);
      if (obj) {
        return `struct<${Object.entries(obj.properties).map(([k, v]) => `${k}:${hive(v, `${where}.${k}`)}`).join(',')}>`;
      }
      if ([s.type].flat().includes('array')) return `array<${hive(s.items, `${where}[]`)}>`;
      const types = [s.type, ...(s.enum ?? []).map((v: unknown) => (v === null ? 'null' : typeof v === 'number' ? 'integer' : typeof v))]
        .flat().filter((x) => x && x !== 'null');
      if (types.every((x) => x === 'string')) return 'string';
      if (types.every((x) => x === 'boolean')) return 'boolean';
      if (types.every((x) => x === 'number')) return 'double';
      if (types.every((x) => x === 'integer')) return where === 'schema_version' || where === 'status' ? 'int' : 'bigint';
      throw new Error(`${where}: no Hive type for ${JSON.stringify(s)}`);
    };
    for (const [name, prop] of Object.entries(schema.properties)) {
      assert.equal(columns.get(name), hive(prop, name), name);
    }
  });

  test('the budget column (schema_version 4) follows admin, as in audit_events.sql', () => {
    const names = input.StorageDescriptor.Columns.map((c: any) => c.Name);
    assert.deepEqual(names.slice(-2), ['admin', 'budget']);
    assert.equal(input.StorageDescriptor.Columns.at(-1).Type, 'struct<counters:array<string>,tokens:bigint,cost_micros:bigint>');
  });

  test('the DDL reader refuses what it does not understand rather than guess', () => {
    assert.throws(() => parseCreateTable('CREATE TABLE t (a int);'), /no CREATE EXTERNAL TABLE/);
    const noProps = sql.replace(/TBLPROPERTIES \([\s\S]*?\);/, ';');
    assert.throws(() => parseCreateTable(noProps), /no TBLPROPERTIES/);
    assert.throws(() => parseCreateTable(sql.replace("'ignore.malformed.json' = 'false'", "ignore.malformed.json = false")), /cannot read property/);
  });

  test('an Athena workgroup with enforced settings, encrypted results in their own bucket, a scan cutoff', () => {
    const wg = byId(dev, 'AWS::Athena::WorkGroup', 'AuditWorkGroup').Properties;
    assert.equal(wg.Name, 'llm-gateway-dev-audit');
    const c = wg.WorkGroupConfiguration;
    assert.equal(c.EnforceWorkGroupConfiguration, true);
    assert.equal(c.BytesScannedCutoffPerQuery, ATHENA_BYTES_SCANNED_CUTOFF);
    assert.equal(c.PublishCloudWatchMetricsEnabled, true);
    const rc = c.ResultConfiguration;
    assert.equal(rc.EncryptionConfiguration.EncryptionOption, 'SSE_KMS');
    const keyId = rc.EncryptionConfiguration.KmsKey['Fn::GetAtt'][0];
    assert.match(keyId, /^QueryResultsKey/);
    const bucketId = idOf(dev, 'AWS::S3::Bucket', 'QueryResultsBucket');
    assert.deepEqual(rc.OutputLocation, { 'Fn::Join': ['', ['s3://', { Ref: bucketId }, '/results/']] });
    const b = resourcesOf(dev, 'AWS::S3::Bucket')[bucketId].Properties;
    assert.equal(b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.KMSMasterKeyID['Fn::GetAtt'][0], keyId);
    assert.deepEqual(Object.values(b.PublicAccessBlockConfiguration), [true, true, true, true]);
    assert.match(b.LoggingConfiguration.DestinationBucketName.Ref, /^AccessLogsBucket/);
    assert.ok(b.LifecycleConfiguration.Rules.some((r: any) => r.ExpirationInDays === ATHENA_RESULTS_DAYS));
    const policy = Object.values(resourcesOf(dev, 'AWS::S3::BucketPolicy')).find((x) => x.Properties.Bucket.Ref === bucketId)!;
    assert.ok(policy.Properties.PolicyDocument.Statement.some((s: any) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'));
  });

  test('the auditors may query: this workgroup, this table, results written only to the results bucket', () => {
    const st = statementsOfRole(dev, 'AuditorRole');
    const withAction = (prefix: string) => st.filter((s) => list<string>(s.Action).some((a) => a.startsWith(prefix)));
    for (const s of withAction('athena:')) assert.match(JSON.stringify(s.Resource), /:workgroup\/llm-gateway-dev-audit"\]\]\}$/);
    assert.ok(withAction('athena:').some((s) => list(s.Action).includes('athena:StartQueryExecution')));
    const glue = withAction('glue:');
    assert.equal(glue.length, 1);
    assert.deepEqual(list<string>(glue[0].Action).filter((a) => !/^glue:Get/.test(a)), [], 'read only');
    const glueResources = JSON.stringify(glue[0].Resource);
    assert.match(glueResources, /:table\/llm_gateway_dev\/llm_gateway_audit_events"/);
    assert.match(glueResources, /:database\/llm_gateway_dev"/);
    const writes = st.filter((s) => list<string>(s.Action).some((a) => /Put|GenerateDataKey|Encrypt/.test(a)));
    assert.ok(writes.length >= 2);
    for (const s of writes) assert.match(JSON.stringify(s.Resource), /QueryResults(Bucket|Key)/);
  });
});

describe('account toggles', () => {
  const singletons = ['AWS::GuardDuty::Detector', 'AWS::SecurityHub::Hub', 'AWS::SecurityHub::Standard',
    'AWS::Config::ConfigurationRecorder', 'AWS::Config::DeliveryChannel'];

  test('off as configured: none of the account singletons', () => {
    for (const envName of ['dev', 'staging', 'prod'] as EnvironmentName[]) {
      const t = envName === 'dev' ? dev : envName === 'prod' ? prodHome : build({ envName }).template;
      for (const type of singletons) assert.equal(ofType(t, type).length, 0, `${envName} ${type}`);
    }
  });

  const home = build({ envName: 'prod', config: allToggles });
  const other = build({ envName: 'prod', region: 'us-west-2', config: allToggles });

  test('GuardDuty: a detector with S3 and Lambda protection; high-severity findings to the alarm topic', () => {
    const d = byId(home.template, 'AWS::GuardDuty::Detector', 'GuardDutyDetector').Properties;
    assert.equal(d.Enable, true);
    assert.deepEqual(d.Features, [{ Name: 'S3_DATA_EVENTS', Status: 'ENABLED' }, { Name: 'LAMBDA_NETWORK_LOGS', Status: 'ENABLED' }]);
    const rule = byId(home.template, 'AWS::Events::Rule', 'GuardDutyFindings').Properties;
    assert.deepEqual(rule.EventPattern, { source: ['aws.guardduty'], 'detail-type': ['GuardDuty Finding'], detail: { severity: [{ numeric: ['>=', 7] }] } });
    assert.deepEqual(rule.Targets[0].Arn, { Ref: idOf(home.template, 'AWS::SNS::Topic', 'AlarmTopic') });
    assert.ok(rule.Targets[0].RoleArn, 'published with a role, not a topic-policy grant');
  });

  test('Security Hub with the AWS Foundational Security Best Practices standard', () => {
    const hub = byId(home.template, 'AWS::SecurityHub::Hub', 'SecurityHub').Properties;
    assert.equal(hub.EnableDefaultStandards, false);
    const std = byId(home.template, 'AWS::SecurityHub::Standard', 'SecurityHubFsbp');
    assert.match(JSON.stringify(std.Properties.StandardsArn), /::standards\/aws-foundational-security-best-practices\/v\/1\.0\.0"\]\]\}$/);
    assert.ok((home.template.toJSON().Resources.SecurityHubFsbp.DependsOn ?? []).includes('SecurityHub'));
  });

  test('AWS Config: a recorder (global types in the home region only), a delivery channel to an encrypted bucket, its role', () => {
    for (const [t, isHome] of [[home.template, true], [other.template, false]] as const) {
      const r = byId(t, 'AWS::Config::ConfigurationRecorder', 'ConfigRecorder').Properties;
      assert.deepEqual(r.RecordingGroup, { AllSupported: true, IncludeGlobalResourceTypes: isHome });
      const roleId = r.RoleARN['Fn::GetAtt'][0];
      const role = resourcesOf(t, 'AWS::IAM::Role')[roleId].Properties;
      assert.deepEqual(role.AssumeRolePolicyDocument.Statement[0].Principal, { Service: 'config.amazonaws.com' });
      assert.match(JSON.stringify(role.ManagedPolicyArns), /service-role\/AWS_ConfigRole/);
      const ch = byId(t, 'AWS::Config::DeliveryChannel', 'ConfigDeliveryChannel').Properties;
      const bucketId = ch.S3BucketName.Ref;
      const b = resourcesOf(t, 'AWS::S3::Bucket')[bucketId].Properties;
      assert.equal(b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, 'aws:kms');
      assert.deepEqual(ch.S3KmsKeyArn, b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.KMSMasterKeyID);
      assert.ok(t.toJSON().Resources.ConfigDeliveryChannel.DependsOn.includes('ConfigRecorder'));
    }
  });

  test('cdk-nag: no unsuppressed finding with every toggle on, home and other region', () => {
    assert.deepEqual(nagFindings(home.stack), []);
    assert.deepEqual(nagFindings(other.stack), []);
  });
});

describe('log level and X-Ray on every function', () => {
  for (const envName of ['dev', 'staging', 'prod'] as EnvironmentName[]) {
    test(`${envName}: RUST_LOG is the environment's logLevel, tracing as configured`, () => {
      const t = envName === 'dev' ? dev : envName === 'prod' ? prodHome : build({ envName }).template;
      const env = config.environments[envName];
      const fns = ofType(t, 'AWS::Lambda::Function');
      assert.equal(fns.length, FUNCTIONS.length);
      for (const [id, f] of fns) {
        assert.equal(f.Properties.Environment.Variables.RUST_LOG, env.logLevel, id);
        assert.equal(f.Properties.TracingConfig?.Mode ?? 'PassThrough', env.tracing ? 'Active' : 'PassThrough', id);
      }
    });
  }
});


