// Operating the gateway: who hears about trouble (alarm topic and alarms), where to look (dashboard), the
// account's own records (CloudTrail, optional GuardDuty, Security Hub, AWS Config) and the auditors' query
// path over the audit trail (Glue table from docs/athena/audit_events.sql, Athena workgroup).
import {
  Aspects, Aws, Duration, IAspect, RemovalPolicy, Stack,
  aws_athena as athena,
  aws_cloudtrail as cloudtrail,
  aws_cloudwatch as cw,
  aws_cloudwatch_actions as cwActions,
  aws_config as awsconfig,
  aws_dynamodb as dynamodb,
  aws_events as events,
  aws_events_targets as targets,
  aws_glue as glue,
  aws_guardduty as guardduty,
  aws_iam as iam,
  aws_kms as kms,
  aws_lambda as lambda,
  aws_logs as logs,
  aws_s3 as s3,
  aws_securityhub as securityhub,
  aws_sns as sns,
  aws_sns_subscriptions as subs,
} from 'aws-cdk-lib';
import { IConstruct } from 'constructs';
import { NagSuppressions } from 'cdk-nag';
import { auditEventsTable } from './athena-table';
import { EnvironmentName, GatewayConfig, PROVIDERS } from './config';
import { FunctionName, SCHEDULER_JOBS } from './functions';
import { pascal } from './names';
import { Buckets, Queues, Tables, privateBucket } from './storage';

/** What the audit-digest job logs when it writes incomplete records (functions/audit-digest/src/lib.rs). */
export const INCOMPLETE_LOG_MESSAGE = 'incomplete requests reported';
/** The field of that line holding how many requests it reported. */
export const INCOMPLETE_COUNT_FIELD = 'requests';
/**
 * tracing-subscriber's JSON format (shared/src/telemetry.rs, in Lambda) puts the message and the event's
 * fields under `fields`; Lambda's text log format stores each line as it was printed.
 */
export const INCOMPLETE_FILTER_PATTERN = `{ $.fields.message = "${INCOMPLETE_LOG_MESSAGE}" }`;
export const INCOMPLETE_METRIC_VALUE = `$.fields.${INCOMPLETE_COUNT_FIELD}`;
/**
 * The routes log every error they answer with one line (shared/src/proxy.rs) whose `kind` field is the error's
 * kind; in the deployed routes only a budget's refusal is `RateLimited` (API Gateway answers its own throttling
 * before a route runs). The filter names the kind alone: that line also carries a `message` field of its own
 * (the error's text), so its `fields` object has the key `message` twice, and which one a JSON reader keeps
 * is not something to count on.
 */
export const BUDGET_REFUSAL_KIND = 'RateLimited';
export const BUDGET_REFUSAL_FILTER_PATTERN = `{ $.fields.kind = "${BUDGET_REFUSAL_KIND}" }`;
/** What the audit writer logs when a request's usage could not be settled (functions/audit-writer/src/lib.rs). */
export const UNSETTLED_LOG_MESSAGE = 'usage not settled; the event will be retried';
export const UNSETTLED_FILTER_PATTERN = `{ $.fields.message = "${UNSETTLED_LOG_MESSAGE}" }`;

/** Alarm thresholds, with what each stands for. */
export const THRESHOLDS = {
  /** The audit writer drains its queue in seconds; a quarter hour means it is failing or throttled. */
  auditOldestMessageSecs: 15 * 60,
  /** Minutes of peak traffic (about 1,000 concurrent users, seed 000) waiting for the writer. */
  auditVisibleMessages: 10_000,
  /** A dispatcher picks a queued request up within seconds; a minute means it is at its cap or failing. */
  requestOldestMessageSecs: 60,
  /** p99 duration as a share of the function timeout: above it, requests are being cut at the deadline. */
  durationShareOfTimeout: 0.8,
  /**
   * Budget refusals in 5 minutes. A per-minute budget refuses a burst now and then, as meant; more than this is
   * a department or user at its budget, its people refused until it recovers or is raised (informational).
   */
  budgetRefusals: 50,
};
/** Bytes one Athena query may scan before Athena cancels it (a day of audit records is far smaller). */
export const ATHENA_BYTES_SCANNED_CUTOFF = 10 * 1024 ** 3;
/** Days query results are kept; the audit bucket stays the source of truth. */
export const ATHENA_RESULTS_DAYS = 30;
const FSBP_STANDARD = 'standards/aws-foundational-security-best-practices/v/1.0.0';

export interface OperationsProps {
  config: GatewayConfig;
  envName: EnvironmentName;
  prefix: string;
  removal: RemovalPolicy;
  buckets: Buckets;
  queues: Queues;
  /** The stack's tables: each has its throttles and system errors alarm. */
  tables: Tables;
  functions: Map<FunctionName, lambda.Function>;
  /** The auditors' role (lib/audit-access.ts): gets the Athena query path. */
  auditors: iam.Role;
  /** Every alarm of the stack so far; the ones made here are added to it. */
  alarms: cw.Alarm[];
}

export interface Operations {
  topic: sns.Topic;
  dashboard: cw.Dashboard;
  incompleteRequests: cw.Metric;
  database: glue.CfnDatabase;
  auditTable: glue.CfnTable;
  workgroup: athena.CfnWorkGroup;
  resultsBucket: s3.Bucket;
  trail?: cloudtrail.CfnTrail;
}

/**
 * The region whose stack holds the account-wide records (the multi-region trail, global resource types in
 * AWS Config): the environment's first region.
 */
export function homeRegion(config: GatewayConfig, envName: EnvironmentName): string {
  return config.environments[envName].regions[0];
}

export function createOperations(stack: Stack, props: OperationsProps): Operations {
  const { config, envName, prefix } = props;
  const ops = config.environments[envName].operations;
  const isHome = stack.region === homeRegion(config, envName);

  const topic = createAlarmTopic(stack, prefix, ops.alarmEmails);
  addAlarmActions(stack, topic);
  const { alarms, incompleteRequests } = createAlarms(stack, props);
  props.alarms.push(...alarms);
  const dashboard = createDashboard(stack, props, incompleteRequests);

  const wantsTrail = ops.cloudTrail && (isHome || ops.cloudTrailDataEvents);
  // Account-level logs (CloudTrail, AWS Config) get a key of their own: no gateway role or auditor uses it.
  const logsKey = wantsTrail || ops.awsConfig
    ? new kms.Key(stack, 'AccountLogsKey', {
        description: `${prefix}: account-level logs (CloudTrail, AWS Config)`,
        enableKeyRotation: true,
        removalPolicy: RemovalPolicy.RETAIN,
      })
    : undefined;
  const trail = wantsTrail ? createTrail(stack, props, logsKey!, isHome) : undefined;

  const query = createAuditQueries(stack, props);

  if (ops.guardDuty) createGuardDuty(stack, topic);
  if (ops.securityHub) createSecurityHub(stack);
  if (ops.awsConfig) createConfigRecorder(stack, props, logsKey!, isHome);

  return { topic, dashboard, incompleteRequests, trail, ...query };
}

// ---- alarm topic

function createAlarmTopic(stack: Stack, prefix: string, emails: string[]): sns.Topic {
  // Its own key: CloudWatch may use it without conditions, AWS's documented form for alarms publishing to an
  // encrypted topic, so it protects nothing but alarm messages.
  const key = new kms.Key(stack, 'AlarmTopicKey', {
    description: `${prefix}: alarm notifications (SNS topic)`,
    enableKeyRotation: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  key.addToResourcePolicy(new iam.PolicyStatement({
    principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
    actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
    resources: ['*'],
  }));
  const topic = new sns.Topic(stack, 'AlarmTopic', {
    displayName: `${prefix} alarms`,
    masterKey: key,
    enforceSSL: true,
  });
  // The topic policy replaces SNS's default one, so CloudWatch is let in by name, for this account's alarms.
  topic.addToResourcePolicy(new iam.PolicyStatement({
    principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
    actions: ['sns:Publish'],
    resources: [topic.topicArn],
    conditions: {
      StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID },
      ArnLike: { 'aws:SourceArn': `arn:${Aws.PARTITION}:cloudwatch:${Aws.REGION}:${Aws.ACCOUNT_ID}:alarm:*` },
    },
  }));
  for (const email of emails) topic.addSubscription(new subs.EmailSubscription(email));
  return topic;
}

class AlarmActions implements IAspect {
  private readonly done = new WeakSet<cw.AlarmBase>();
  constructor(private readonly action: cw.IAlarmAction) {}
  visit(node: IConstruct): void {
    if (node instanceof cw.AlarmBase && !this.done.has(node)) {
      node.addAlarmAction(this.action);
      node.addOkAction(this.action);
      this.done.add(node);
    }
  }
}

/**
 * Every alarm in the stack notifies the topic, going into alarm and back to OK, including alarms other
 * modules add after this one (an aspect runs when the app is synthesized, after every construct exists).
 */
export function addAlarmActions(stack: Stack, topic: sns.ITopic) {
  Aspects.of(stack).add(new AlarmActions(new cwActions.SnsAction(topic)));
}

// ---- alarms

const ROUTES: readonly FunctionName[] = PROVIDERS;

/** The item and index operations every table's alarms sum. */
const TABLE_OPERATIONS = [dynamodb.Operation.QUERY, dynamodb.Operation.GET_ITEM, dynamodb.Operation.PUT_ITEM,
  dynamodb.Operation.UPDATE_ITEM];

/**
 * What each table's alarms call it, what its throttling costs, and the operations its callers use beyond
 * TABLE_OPERATIONS.
 */
const TABLE_ALARMS: Record<keyof Tables, { what: string; throttled: string; operations?: dynamodb.Operation[] }> = {
  revocations: {
    what: 'revocations table',
    throttled: 'the authorizer may refuse tokens it cannot check; user changes fail',
  },
  apiKeys: {
    what: 'API key table',
    throttled: 'the authorizer may refuse API keys it cannot check; keys cannot be issued, rotated or revoked; last uses go unrecorded',
  },
  departments: {
    what: 'department settings table',
    throttled: 'routes whose copy of the budget settings grows too old answer 500 to department members; budgets cannot be read or changed',
  },
  usage: {
    what: 'usage table',
    throttled: 'requests under a budget fail (reservations fail closed); the audit writer settles late, retrying its events; budget alerts wait for a later run',
    // The scheduler gives a budget alert's claim back with DeleteItem when the mail fails.
    operations: [dynamodb.Operation.DELETE_ITEM],
  },
};

function createAlarms(stack: Stack, props: OperationsProps): { alarms: cw.Alarm[]; incompleteRequests: cw.Metric } {
  const { config, prefix, queues, functions } = props;
  const alarms: cw.Alarm[] = [];
  const fiveMinutes = Duration.minutes(5);
  const alarm = (id: string, description: string, metric: cw.IMetric, threshold: number, opts: {
    periods?: number; operator?: cw.ComparisonOperator;
  } = {}) => {
    alarms.push(new cw.Alarm(stack, id, {
      alarmDescription: `${prefix}: ${description}`,
      metric,
      threshold,
      evaluationPeriods: opts.periods ?? 1,
      datapointsToAlarm: opts.periods ?? 1,
      comparisonOperator: opts.operator ?? cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cw.TreatMissingData.NOT_BREACHING,
    }));
  };

  for (const [name, fn] of functions) {
    const id = pascal(name);
    alarm(`${id}Throttles`, `${name} invocations throttled (reserved or account concurrency reached)`,
      fn.metricThrottles({ period: fiveMinutes }), 1);
    // The digest job has its own hourly errors alarm (lib/functions.ts).
    if (name !== 'audit-digest') {
      // Every scheduled job fails its invocation when it fails, so the scheduler's one alarm covers each rule.
      const what = name === 'authorizer'
        ? 'authorizer errors (API Gateway answers 500 to every request it would have authorized)'
        : ROUTES.includes(name)
          ? `${name} route function errors (crashes or timeouts; the client got a 5xx or a cut stream)`
          : name === 'scheduler'
            ? `scheduler job failures (one of ${SCHEDULER_JOBS.join(', ')}; the failed invocation's error in the function's log says which)`
            : `${name} function errors`;
      alarm(`${id}Errors`, what, fn.metricErrors({ period: fiveMinutes }), 1);
    }
  }

  // A route's or the dispatcher's Duration is the whole request, a stream included, so its p99 near the
  // timeout means requests are being cut at the deadline, the provider being slow or stalled.
  const timeoutMs = config.functions.routeTimeoutSecs * 1000;
  for (const name of [...ROUTES, 'dispatcher'] as FunctionName[]) {
    const fn = functions.get(name);
    if (!fn) continue;
    alarm(`${pascal(name)}DurationP99`,
      `${name} p99 duration above ${THRESHOLDS.durationShareOfTimeout * 100}% of the ${config.functions.routeTimeoutSecs} s timeout (provider latency; streams cut at the deadline)`,
      fn.metricDuration({ period: fiveMinutes, statistic: 'p99' }),
      Math.round(timeoutMs * THRESHOLDS.durationShareOfTimeout), { periods: 3 });
  }

  alarm('AuditQueueOldestMessage',
    `audit events older than ${THRESHOLDS.auditOldestMessageSecs / 60} min wait in the audit queue (writer failing or throttled)`,
    queues.audit.metricApproximateAgeOfOldestMessage({ period: fiveMinutes, statistic: 'Maximum' }),
    THRESHOLDS.auditOldestMessageSecs);
  alarm('AuditQueueBacklog', `more than ${THRESHOLDS.auditVisibleMessages} audit events wait in the audit queue`,
    queues.audit.metricApproximateNumberOfMessagesVisible({ period: fiveMinutes, statistic: 'Maximum' }),
    THRESHOLDS.auditVisibleMessages, { periods: 3 });
  for (const [p, queue] of queues.requests) {
    alarm(`RequestQueue${pascal(p)}OldestMessage`,
      `${p} requests wait more than ${THRESHOLDS.requestOldestMessageSecs} s for a dispatcher (dispatcher throttled or failing)`,
      queue.metricApproximateAgeOfOldestMessage({ period: fiveMinutes, statistic: 'Maximum' }),
      THRESHOLDS.requestOldestMessageSecs, { periods: 2 });
  }

  // The tables: the authorizer and the routes poll the mirrored ones' update indexes, the user jobs, the admin
  // API and the audit writer write them, the routes and the audit writer count usage. On-demand tables still
  // throttle (a hot partition, or a burst past twice the previous peak).
  for (const [name, table] of Object.entries(props.tables) as [keyof Tables, dynamodb.Table][]) {
    const { what, throttled, operations = [] } = TABLE_ALARMS[name];
    const tableOps = [...TABLE_OPERATIONS, ...operations];
    alarm(`${table.node.id}Throttles`, `${what} requests throttled (${throttled})`,
      table.metricThrottledRequestsForOperations({ operations: tableOps, period: fiveMinutes }), 1);
    alarm(`${table.node.id}SystemErrors`, `${what} system errors (DynamoDB answered 500)`,
      table.metricSystemErrorsForOperations({ operations: tableOps, period: fiveMinutes }), 1);
  }

  // Counts (or `value`s) of the functions' log lines that match `pattern`, summed into one metric: a filter per
  // log group, all publishing to the same name.
  const namespace = `LlmGateway/${prefix}`;
  const logMetric = (metricName: string, names: FunctionName[], pattern: string, period: Duration, value?: string) => {
    for (const name of names) {
      new logs.MetricFilter(stack, names.length === 1 ? `${metricName}Filter` : `${metricName}Filter${pascal(name)}`, {
        logGroup: functions.get(name)!.logGroup as logs.ILogGroup,
        filterPattern: logs.FilterPattern.literal(pattern),
        metricNamespace: namespace,
        metricName,
        metricValue: value,
        unit: cw.Unit.COUNT,
      });
    }
    return new cw.Metric({ namespace, metricName, period, statistic: 'Sum' });
  };

  // The digest job writes an incomplete record for each request whose final never came, and logs how many.
  const incompleteRequests = logMetric('IncompleteRequests', ['audit-digest'], INCOMPLETE_FILTER_PATTERN,
    Duration.hours(1), INCOMPLETE_METRIC_VALUE);
  alarm('IncompleteRequests',
    'requests without a final audit record (incomplete records written by the hourly digest job: sandbox died mid-request, or the final event was lost)',
    incompleteRequests, 1);

  alarm('BudgetRefusals',
    `more than ${THRESHOLDS.budgetRefusals} requests refused by a budget in 5 minutes (informational: a department or user at its budget; GET /admin/departments/{id}/usage shows where it stands)`,
    logMetric('BudgetRefusals', [...ROUTES], BUDGET_REFUSAL_FILTER_PATTERN, fiveMinutes),
    THRESHOLDS.budgetRefusals, { operator: cw.ComparisonOperator.GREATER_THAN_THRESHOLD });
  // A failed settlement leaves the request's worst case on its counters, and its audit event in the queue,
  // until a retry settles it.
  alarm('UsageNotSettled',
    'the audit writer could not settle requests\' usage on the usage counters (DynamoDB failing or throttled; the events are retried, their reservations counted until then)',
    logMetric('UsageNotSettled', ['audit-writer'], UNSETTLED_FILTER_PATTERN, fiveMinutes), 1);

  return { alarms, incompleteRequests };
}

// ---- dashboard

function createDashboard(stack: Stack, props: OperationsProps, incompleteRequests: cw.Metric): cw.Dashboard {
  const { prefix, queues, functions } = props;
  const period = Duration.minutes(5);
  const perFunction = (title: string, metric: (fn: lambda.Function) => cw.Metric, names = [...functions.keys()]) =>
    new cw.GraphWidget({
      title,
      width: 8,
      left: names.filter((n) => functions.has(n)).map((n) => metric(functions.get(n)!).with({ label: n, period })),
    });
  const requestPath = [...ROUTES, 'dispatcher'] as FunctionName[];
  const dashboard = new cw.Dashboard(stack, 'Dashboard', {
    // Dashboard names are global to the account, so the region is part of it.
    dashboardName: `${prefix}-${stack.region}`,
    defaultInterval: Duration.hours(6),
  });
  dashboard.addWidgets(new cw.TextWidget({
    markdown: `# ${prefix} (${stack.region})\nRoutes are named by provider; the dispatcher relays queue-transport providers. API Gateway metrics per provider API are added with the APIs.`,
    width: 24,
    height: 2,
  }));
  dashboard.addWidgets(
    perFunction('Invocations', (fn) => fn.metricInvocations({ statistic: 'Sum' })),
    perFunction('Errors', (fn) => fn.metricErrors({ statistic: 'Sum' })),
    perFunction('Throttles', (fn) => fn.metricThrottles({ statistic: 'Sum' })),
  );
  dashboard.addWidgets(
    perFunction('Duration p50 (ms): whole request, streams included', (fn) => fn.metricDuration({ statistic: 'p50' }), requestPath),
    perFunction('Duration p99 (ms): whole request, streams included', (fn) => fn.metricDuration({ statistic: 'p99' }), requestPath),
    perFunction('Concurrent executions (max)', (fn) => fn.metric('ConcurrentExecutions', { statistic: 'Maximum' })),
  );
  const queueMetric = (label: string, m: cw.Metric) => m.with({ label, period, statistic: 'Maximum' });
  dashboard.addWidgets(
    new cw.GraphWidget({
      title: 'Age of oldest message (s)',
      width: 8,
      left: [
        queueMetric('audit', queues.audit.metricApproximateAgeOfOldestMessage()),
        ...[...queues.requests].map(([p, q]) => queueMetric(p, q.metricApproximateAgeOfOldestMessage())),
      ],
    }),
    new cw.GraphWidget({
      title: 'Messages waiting',
      width: 8,
      left: [
        queueMetric('audit', queues.audit.metricApproximateNumberOfMessagesVisible()),
        ...[...queues.requests].map(([p, q]) => queueMetric(p, q.metricApproximateNumberOfMessagesVisible())),
      ],
    }),
    new cw.GraphWidget({
      title: 'Dead-letter queues (messages)',
      width: 8,
      left: queues.dlqs.map((q) => queueMetric(q.node.id.replace(/Dlq$/, ''), q.metricApproximateNumberOfMessagesVisible())),
    }),
  );
  dashboard.addWidgets(
    new cw.GraphWidget({ title: 'Incomplete requests (per hour)', width: 12, left: [incompleteRequests] }),
    new cw.AlarmStatusWidget({ title: 'Alarms', width: 12, alarms: props.alarms }),
  );
  return dashboard;
}

// ---- CloudTrail

function retainedLogBucket(stack: Stack, id: string, props: OperationsProps, key: kms.IKey, logPrefix: string): s3.Bucket {
  const env = props.config.environments[props.envName];
  return privateBucket(stack, id, key, props.buckets.accessLogs, logPrefix, {
    versioned: true,
    // Kept as long as the audit trail they back up, at least a year.
    lifecycleRules: [{
      transitions: [{ storageClass: s3.StorageClass.GLACIER, transitionAfter: Duration.days(env.auditGlacierAfterDays) }],
      expiration: Duration.days(Math.max(365, env.auditRetentionDays)),
      noncurrentVersionExpiration: Duration.days(30),
    }],
    removalPolicy: RemovalPolicy.RETAIN,
  });
}

/**
 * The home region's stack holds a multi-region trail of management events (one copy of them is free, more
 * are billed); with data events on, each region's stack logs its own buckets' and functions' data events,
 * the other regions in a single-region trail without management events.
 */
function createTrail(stack: Stack, props: OperationsProps, key: kms.Key, isHome: boolean): cloudtrail.CfnTrail {
  const { config, envName, prefix, buckets, functions } = props;
  const ops = config.environments[envName].operations;
  const trailName = isHome ? `${prefix}-trail` : `${prefix}-data-events-${stack.region}`;
  const trailArn = `arn:${Aws.PARTITION}:cloudtrail:${Aws.REGION}:${Aws.ACCOUNT_ID}:trail/${trailName}`;
  key.addToResourcePolicy(new iam.PolicyStatement({
    principals: [new iam.ServicePrincipal('cloudtrail.amazonaws.com')],
    actions: ['kms:GenerateDataKey*'],
    resources: ['*'],
    conditions: {
      StringEquals: { 'aws:SourceArn': trailArn },
      StringLike: { 'kms:EncryptionContext:aws:cloudtrail:arn': `arn:${Aws.PARTITION}:cloudtrail:*:${Aws.ACCOUNT_ID}:trail/*` },
    },
  }));
  key.addToResourcePolicy(new iam.PolicyStatement({
    principals: [new iam.ServicePrincipal('cloudtrail.amazonaws.com')],
    actions: ['kms:DescribeKey'],
    resources: ['*'],
    conditions: { StringEquals: { 'aws:SourceArn': trailArn } },
  }));
  const bucket = retainedLogBucket(stack, 'TrailBucket', props, key, 'cloudtrail/');
  // CloudTrail writes as itself; only this trail may (aws:SourceArn), and only under this account's prefix.
  bucket.addToResourcePolicy(new iam.PolicyStatement({
    principals: [new iam.ServicePrincipal('cloudtrail.amazonaws.com')],
    actions: ['s3:GetBucketAcl'],
    resources: [bucket.bucketArn],
    conditions: { StringEquals: { 'aws:SourceArn': trailArn } },
  }));
  bucket.addToResourcePolicy(new iam.PolicyStatement({
    principals: [new iam.ServicePrincipal('cloudtrail.amazonaws.com')],
    actions: ['s3:PutObject'],
    resources: [bucket.arnForObjects(`AWSLogs/${Aws.ACCOUNT_ID}/*`)],
    conditions: { StringEquals: { 'aws:SourceArn': trailArn, 's3:x-amz-acl': 'bucket-owner-full-control' } },
  }));

  const dataResources: cloudtrail.CfnTrail.DataResourceProperty[] = ops.cloudTrailDataEvents
    ? [
        { type: 'AWS::S3::Object', values: [`${buckets.audit.bucketArn}/`, `${buckets.payloads.bucketArn}/`] },
        { type: 'AWS::Lambda::Function', values: [...functions.values()].map((f) => f.functionArn) },
      ]
    : [];
  const trail = new cloudtrail.CfnTrail(stack, 'Trail', {
    trailName,
    isLogging: true,
    isMultiRegionTrail: isHome,
    includeGlobalServiceEvents: isHome,
    enableLogFileValidation: true,
    s3BucketName: bucket.bucketName,
    kmsKeyId: key.keyArn,
    eventSelectors: [{
      readWriteType: 'All',
      includeManagementEvents: isHome,
      ...(dataResources.length > 0 && { dataResources }),
    }],
  });
  // CloudTrail checks its bucket's policy when the trail is created.
  trail.node.addDependency(bucket.policy!);
  return trail;
}

// ---- Glue and Athena

function createAuditQueries(stack: Stack, props: OperationsProps) {
  const { config, envName, prefix, removal, buckets, auditors } = props;
  const databaseName = `${config.project}_${envName}`.replace(/-/g, '_');
  const database = new glue.CfnDatabase(stack, 'AuditDatabase', {
    catalogId: Aws.ACCOUNT_ID,
    databaseInput: { name: databaseName, description: `${prefix}: the gateway's audit trail` },
  });
  const def = auditEventsTable(buckets.audit.bucketName);
  const auditTable = new glue.CfnTable(stack, 'AuditEventsTable', {
    catalogId: Aws.ACCOUNT_ID,
    databaseName,
    tableInput: {
      name: def.name,
      description: 'Audit events (docs/athena/audit_events.sql, schemas/audit-event.schema.json)',
      tableType: 'EXTERNAL_TABLE',
      parameters: { EXTERNAL: 'TRUE', ...def.tableProperties },
      partitionKeys: def.partitionKeys,
      storageDescriptor: {
        columns: def.columns,
        location: def.location,
        inputFormat: def.inputFormat,
        outputFormat: def.outputFormat,
        serdeInfo: { serializationLibrary: def.serde, parameters: def.serdeProperties },
      },
    },
  });
  auditTable.node.addDependency(database);

  const resultsKey = new kms.Key(stack, 'QueryResultsKey', {
    description: `${prefix}: Athena query results over the audit trail`,
    enableKeyRotation: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const resultsBucket = privateBucket(stack, 'QueryResultsBucket', resultsKey, buckets.accessLogs, 'query-results/', {
    lifecycleRules: [{
      expiration: Duration.days(ATHENA_RESULTS_DAYS),
      abortIncompleteMultipartUploadAfter: Duration.days(1),
    }],
    removalPolicy: removal,
  });
  const workgroupName = `${prefix}-audit`;
  const workgroup = new athena.CfnWorkGroup(stack, 'AuditWorkGroup', {
    name: workgroupName,
    description: `${prefix}: queries over the audit trail (results encrypted, kept ${ATHENA_RESULTS_DAYS} days)`,
    state: 'ENABLED',
    recursiveDeleteOption: true,
    workGroupConfiguration: {
      // Clients cannot send results elsewhere or unencrypted.
      enforceWorkGroupConfiguration: true,
      publishCloudWatchMetricsEnabled: true,
      bytesScannedCutoffPerQuery: ATHENA_BYTES_SCANNED_CUTOFF,
      engineVersion: { selectedEngineVersion: 'Athena engine version 3' },
      resultConfiguration: {
        outputLocation: `s3://${resultsBucket.bucketName}/results/`,
        encryptionConfiguration: { encryptionOption: 'SSE_KMS', kmsKey: resultsKey.keyArn },
        expectedBucketOwner: Aws.ACCOUNT_ID,
      },
    },
  });

  // The auditors' query path: run queries in this workgroup only, read this table only, keep results in
  // the workgroup's bucket. Reading the audit objects themselves they already may (lib/audit-access.ts).
  const glueArn = (resource: string) => `arn:${Aws.PARTITION}:glue:${Aws.REGION}:${Aws.ACCOUNT_ID}:${resource}`;
  const workgroupArn = `arn:${Aws.PARTITION}:athena:${Aws.REGION}:${Aws.ACCOUNT_ID}:workgroup/${workgroupName}`;
  auditors.addToPolicy(new iam.PolicyStatement({
    actions: [
      'athena:StartQueryExecution', 'athena:StopQueryExecution', 'athena:GetQueryExecution',
      'athena:GetQueryResults', 'athena:GetQueryResultsStream', 'athena:ListQueryExecutions',
      'athena:BatchGetQueryExecution', 'athena:GetWorkGroup',
    ],
    resources: [workgroupArn],
  }));
  auditors.addToPolicy(new iam.PolicyStatement({
    actions: ['glue:GetDatabase', 'glue:GetTable', 'glue:GetTables', 'glue:GetPartition', 'glue:GetPartitions'],
    resources: [glueArn('catalog'), glueArn(`database/${databaseName}`), glueArn(`table/${databaseName}/${def.name}`)],
  }));
  auditors.addToPolicy(new iam.PolicyStatement({
    actions: ['s3:GetBucketLocation', 's3:ListBucket', 's3:ListBucketMultipartUploads'],
    resources: [resultsBucket.bucketArn],
  }));
  auditors.addToPolicy(new iam.PolicyStatement({
    actions: ['s3:GetObject', 's3:PutObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
    resources: [resultsBucket.arnForObjects('results/*')],
  }));
  auditors.addToPolicy(new iam.PolicyStatement({
    actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
    resources: [resultsKey.keyArn],
  }));
  NagSuppressions.addResourceSuppressions(auditors, [{
    id: 'AwsSolutions-IAM5',
    reason: 'Athena writes each query\'s result under a key it names at run time (results/<query id>.csv), in the workgroup\'s own results bucket only',
    appliesTo: [{ regex: '/^Resource::<QueryResultsBucket[A-F0-9]{8}\\.Arn>\\/results\\/\\*$/' }],
  }], true);
  return { database, auditTable, workgroup, resultsBucket };
}

// ---- account toggles (each an account-and-region singleton; README)

function createGuardDuty(stack: Stack, topic: sns.Topic) {
  const detector = new guardduty.CfnDetector(stack, 'GuardDutyDetector', {
    enable: true,
    findingPublishingFrequency: 'FIFTEEN_MINUTES',
    // S3 protection watches data events on every bucket of the account, the gateway's included; Lambda
    // protection watches the functions' network activity (the dispatcher's calls out through the NAT).
    features: [
      { name: 'S3_DATA_EVENTS', status: 'ENABLED' },
      { name: 'LAMBDA_NETWORK_LOGS', status: 'ENABLED' },
    ],
  });
  // High-severity findings reach the same people as the alarms.
  const rule = new events.Rule(stack, 'GuardDutyFindings', {
    description: 'GuardDuty findings of high severity (7 and above) to the alarm topic',
    eventPattern: {
      source: ['aws.guardduty'],
      detailType: ['GuardDuty Finding'],
      detail: { severity: events.Match.greaterThanOrEqual(7) },
    },
    // A role of this rule's own rather than a topic-policy grant to every EventBridge rule of any account.
    targets: [new targets.SnsTopic(topic, { authorizeUsingRole: true })],
  });
  rule.node.addDependency(detector);
  NagSuppressions.addResourceSuppressions(rule, [{
    id: 'AwsSolutions-IAM5',
    reason: 'the rule\'s role publishes to the alarm topic; kms:GenerateDataKey* is the action group the SNS grant adds for the topic\'s own key, on that key only',
    appliesTo: ['Action::kms:GenerateDataKey*'],
  }], true);
}

function createSecurityHub(stack: Stack) {
  const hub = new securityhub.CfnHub(stack, 'SecurityHub', {
    // The standard is named below rather than left to the default set.
    enableDefaultStandards: false,
    controlFindingGenerator: 'SECURITY_CONTROL',
    autoEnableControls: true,
  });
  const standard = new securityhub.CfnStandard(stack, 'SecurityHubFsbp', {
    standardsArn: `arn:${Aws.PARTITION}:securityhub:${Aws.REGION}::${FSBP_STANDARD}`,
  });
  standard.node.addDependency(hub);
}

function createConfigRecorder(stack: Stack, props: OperationsProps, key: kms.Key, isHome: boolean) {
  const { prefix } = props;
  const bucket = retainedLogBucket(stack, 'ConfigBucket', props, key, 'config/');
  const role = new iam.Role(stack, 'ConfigRecorderRole', {
    assumedBy: new iam.ServicePrincipal('config.amazonaws.com'),
    description: `${prefix}: AWS Config recorder`,
    managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AWS_ConfigRole')],
  });
  // Delivery to a bucket of the same account goes with the recorder's role.
  role.addToPolicy(new iam.PolicyStatement({
    actions: ['s3:GetBucketAcl', 's3:ListBucket'],
    resources: [bucket.bucketArn],
  }));
  role.addToPolicy(new iam.PolicyStatement({
    actions: ['s3:PutObject'],
    resources: [bucket.arnForObjects(`AWSLogs/${Aws.ACCOUNT_ID}/Config/*`)],
  }));
  key.grant(role, 'kms:GenerateDataKey', 'kms:Decrypt');
  NagSuppressions.addResourceSuppressions(role, [
    {
      id: 'AwsSolutions-IAM4',
      reason: 'AWS_ConfigRole is the managed policy AWS documents for a Config recorder\'s role: it grants the read-only Describe/List/Get calls on every resource type Config records, which AWS keeps current as types are added',
      appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWS_ConfigRole'],
    },
    {
      id: 'AwsSolutions-IAM5',
      reason: 'Config names its snapshot and history objects at run time, under this account\'s AWSLogs/<account>/Config/ prefix of its own bucket only',
      appliesTo: [{ regex: '/^Resource::<ConfigBucket[A-F0-9]{8}\\.Arn>\\/AWSLogs\\/<AWS::AccountId>\\/Config\\/\\*$/' }],
    },
  ], true);
  const recorder = new awsconfig.CfnConfigurationRecorder(stack, 'ConfigRecorder', {
    roleArn: role.roleArn,
    recordingGroup: {
      allSupported: true,
      // Global resources (IAM) are recorded once, in the home region.
      includeGlobalResourceTypes: isHome,
    },
  });
  const channel = new awsconfig.CfnDeliveryChannel(stack, 'ConfigDeliveryChannel', {
    s3BucketName: bucket.bucketName,
    s3KmsKeyArn: key.keyArn,
    configSnapshotDeliveryProperties: { deliveryFrequency: 'TwentyFour_Hours' },
  });
  channel.node.addDependency(recorder);
}
