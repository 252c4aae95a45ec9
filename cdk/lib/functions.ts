// The ten functions: one role, log group and environment each, built from the configuration; the
// event sources and the schedules that invoke them.
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import {
  Annotations, Aws, Duration, RemovalPolicy, Stack,
  aws_cloudwatch as cw,
  aws_dynamodb as dynamodb,
  aws_ec2 as ec2,
  aws_events as events,
  aws_events_targets as targets,
  aws_iam as iam,
  aws_lambda as lambda,
  aws_lambda_event_sources as sources,
  aws_logs as logs,
  aws_s3 as s3,
  aws_secretsmanager as sm,
} from 'aws-cdk-lib';
import { NagSuppressions } from 'cdk-nag';
import { EnvironmentName, GatewayConfig, PROVIDERS, ProviderName } from './config';
import { Identity, loadScopePolicy } from './identity';
import { pascal } from './names';
import { Buckets, Keys, Queues, Tables, UPDATE_INDEX } from './storage';

export const FUNCTIONS = [
  'authorizer', 'azure-openai', 'bedrock-claude', 'gemini', 'dispatcher', 'audit-writer', 'audit-digest',
  'scheduler', 'provisioner', 'admin-api',
] as const;
export type FunctionName = (typeof FUNCTIONS)[number];

export const REPLY_QUEUE_PREFIX = 'llm-gateway-reply-';
export const AUDIT_PREFIX = 'audit/';
export const DIGEST_PREFIX = 'digests/';
export const BODIES_PREFIX = 'bodies/';
/** functions/provisioner: files under these prefixes are applied or only planned; reports go under the last. */
export const PROVISIONING_APPLY_PREFIX = 'incoming/';
export const PROVISIONING_DRY_RUN_PREFIX = 'dry-run/';
export const PROVISIONING_REPORT_PREFIX = 'reports/provisioning/';
/** functions/scheduler/src/chargeback.rs: the daily usage rollups (`daily_key`) and the monthly chargeback (`chargeback_key`). */
export const USAGE_REPORT_PREFIX = 'reports/usage/';
export const CHARGEBACK_REPORT_PREFIX = 'reports/chargeback/';
export const PLACEHOLDER_ASSET = path.join(__dirname, '..', 'assets', 'placeholder');
/** How long the admin API's presigned upload URLs for HR files stay valid (GATEWAY_UPLOAD_URL_TTL_SECS). */
export const UPLOAD_URL_TTL_SECS = 300;
/** The admin API's function timeout: API Gateway's default (and, buffered, longest) integration timeout. */
export const ADMIN_API_TIMEOUT = Duration.seconds(29);
/** The scheduler's daily user-dates job: minutes after local midnight (00:05) in the provisioning offset. */
export const USER_DATES_LOCAL_MINUTE = 5;
/**
 * The scheduler's jobs, each the `{"job": ...}` its rule sends (`Job` in functions/scheduler/src/lib.rs, whose
 * every variant has a rule here).
 */
export const SCHEDULER_JOBS = ['sweep-reply-queues', 'user-dates', 'budget-alerts', 'usage-rollup', 'chargeback', 'usage-plans'] as const;
export type SchedulerJob = (typeof SCHEDULER_JOBS)[number];
/**
 * How often the usage-plans job puts each department's API Gateway usage plan back to its settings (the
 * local stack's `USAGE_PLANS` period): after a deploy that set a plan's configured limits again, or a change
 * made by hand.
 */
export const USAGE_PLANS_RATE = Duration.minutes(15);
/** How often the budget-alerts job looks at the month's usage (the local stack's `BUDGET_ALERTS` period). */
export const BUDGET_ALERTS_RATE = Duration.minutes(5);
/**
 * The daily usage rollup (yesterday, UTC) runs at 00:30 UTC: events land in the audit partition of the hour
 * they are written, seconds to minutes after they happen, so by then yesterday's have arrived but for a
 * backlog's (which alarms after 15 minutes). The month's chargeback re-reads every day of the month, later
 * arrivals included, on the 1st at 04:00 UTC (after the last day's late partitions); either can be run again
 * for a given day or month by hand.
 */
export const USAGE_ROLLUP_UTC = { hour: 0, minute: 30 };
// 04:00: after the last day's late partitions (the rollup reads three hours past midnight) are written.
export const CHARGEBACK_UTC = { day: 1, hour: 4, minute: 0 };
/**
 * EventBridge's delivery retries and maximum event age for every rule that invokes a function (the jobs are
 * idempotent; a failed run fails its invocation, which the function's Errors alarm reports).
 */
const RULE_RETRY = { retryAttempts: 2, maxEventAge: Duration.hours(1) };

/**
 * The UTC hour and minute of a daily local time (`localMinuteOfDay` after local midnight) in a zone
 * `utcOffsetMinutes` east of UTC: 00:05 at +540 (Japan) is 15:05 UTC the day before, at -300 05:05, at
 * +330 18:35. EventBridge cron runs in UTC; a fixed offset has no daylight saving to follow.
 */
export function dailyUtcCron(localMinuteOfDay: number, utcOffsetMinutes: number): { hour: number; minute: number } {
  const day = 24 * 60;
  const utc = (((localMinuteOfDay - utcOffsetMinutes) % day) + day) % day;
  return { hour: Math.floor(utc / 60), minute: utc % 60 };
}

/** The SES identity's ARN in this stack's account and region (what ses:SendEmail is authorized against). */
export function sesIdentityArn(identity: string): string {
  return `arn:${Aws.PARTITION}:ses:${Aws.REGION}:${Aws.ACCOUNT_ID}:identity/${identity}`;
}

/** Where `cargo lambda build` puts `<function>/bootstrap`. */
export function lambdaOutputDir(): string {
  if (process.env.GATEWAY_LAMBDA_DIR) return process.env.GATEWAY_LAMBDA_DIR;
  const target = process.env.CARGO_TARGET_DIR ?? path.join(__dirname, '..', '..', 'target');
  return path.join(target, 'lambda');
}

/**
 * `real`: the cargo lambda output, required. `placeholder`: the test-mode stand-in for every function.
 * `auto`: the real output where it exists, else the placeholder (with a synth warning).
 */
export type AssetMode = 'auto' | 'real' | 'placeholder';

const providerEnvName: Record<ProviderName, string> = {
  'azure-openai': 'AZURE_OPENAI',
  'bedrock-claude': 'BEDROCK',
  gemini: 'GEMINI',
};

export interface FunctionsProps {
  config: GatewayConfig;
  envName: EnvironmentName;
  assets: AssetMode;
  prefix: string;
  removal: RemovalPolicy;
  keys: Keys;
  buckets: Buckets;
  queues: Queues;
  identity: Identity;
  /** The revocations, API key, department settings and usage tables (lib/storage.ts). */
  tables: Tables;
  /** The dispatcher's VPC placement (lib/network.ts); absent, it runs outside any VPC. */
  dispatcherNetwork?: { vpc: ec2.IVpc; subnets: ec2.SubnetSelection; securityGroup: ec2.ISecurityGroup };
}

export interface Functions {
  functions: Map<FunctionName, lambda.Function>;
  /** Provider API key secrets (keyed providers only). */
  secrets: Map<ProviderName, sm.Secret>;
  /** The digest job's failure alarm. */
  alarms: cw.Alarm[];
  /** The provisioner's age identity (set after deploy). */
  provisioningIdentity: sm.Secret;
}

export function createFunctions(stack: Stack, props: FunctionsProps): Functions {
  const { config, envName, prefix, removal, keys, buckets, queues, identity, tables } = props;
  const env = config.environments[envName];
  const fns = config.functions;
  const functions = new Map<FunctionName, lambda.Function>();
  const alarms: cw.Alarm[] = [];
  const queued = [...queues.requests.keys()];
  const replyQueueArn = `arn:${Aws.PARTITION}:sqs:${Aws.REGION}:${Aws.ACCOUNT_ID}:${REPLY_QUEUE_PREFIX}*`;

  // s3:PutObject only (grantPut would add PutObjectRetention/LegalHold, which no gateway role may have),
  // with the bucket key's GenerateDataKey for SSE-KMS.
  const putObjects = (bucket: s3.Bucket, fn: lambda.Function, pattern: string) => {
    fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [bucket.arnForObjects(pattern)] }));
    keys.data.grant(fn, 'kms:GenerateDataKey');
  };
  // s3:GetObject under the prefixes only (not grantRead's GetObject*/GetBucket*/List* groups), the bucket key's
  // Decrypt, and the listing `list` names, limited by s3:prefix to the same prefixes. ListBucket is also what
  // makes S3 answer a missing key with NoSuchKey (which the functions handle) instead of AccessDenied.
  const readObjects = (bucket: s3.Bucket, fn: lambda.Function, prefixes: string[], list: ('s3:ListBucket' | 's3:ListBucketVersions')[]) => {
    fn.addToRolePolicy(new iam.PolicyStatement({
      actions: list,
      resources: [bucket.bucketArn],
      conditions: { StringLike: { 's3:prefix': prefixes.map((p) => `${p}*`) } },
    }));
    fn.addToRolePolicy(new iam.PolicyStatement({
      actions: ['s3:GetObject'],
      resources: prefixes.map((p) => bucket.arnForObjects(`${p}*`)),
    }));
    keys.data.grant(fn, 'kms:Decrypt');
  };

  // ---- provider secrets (values set out of band, never in the template)
  const secrets = new Map<ProviderName, sm.Secret>();
  for (const p of PROVIDERS.filter((x) => x !== 'bedrock-claude')) {
    secrets.set(p, new sm.Secret(stack, `${pascal(p)}KeySecret`, {
      description: `${prefix}: ${p} API key (set with put-secret-value after deploy)`,
      encryptionKey: keys.data,
      removalPolicy: removal,
    }));
    NagSuppressions.addResourceSuppressions(secrets.get(p)!, [{
      id: 'AwsSolutions-SMG4',
      reason: 'the secret holds a provider API key issued by Azure or Google; it is rotated at the provider and stored with put-secret-value (README deploy section); a rotation function would need provider admin credentials in this account',
    }]);
  }

  // ---- functions
  const common = {
    RUST_LOG: env.logLevel,
  };
  const upstreamEnv = (p: ProviderName): Record<string, string> => {
    const e: Record<string, string> = {};
    const name = providerEnvName[p];
    const endpoint = config.providers[p].endpoint;
    if (p === 'bedrock-claude') {
      e.GATEWAY_BEDROCK_REGION = Aws.REGION;
    } else {
      if (endpoint) e[`GATEWAY_${name}_ENDPOINT`] = endpoint;
      const keyName = p === 'azure-openai' ? 'GATEWAY_AZURE_OPENAI_KEY_SECRET_ID' : 'GATEWAY_GEMINI_KEY_SECRET_ID';
      e[keyName] = secrets.get(p)!.secretArn;
    }
    return e;
  };
  const upstreamTimeouts = {
    GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS: String(fns.upstreamConnectTimeoutMs),
    GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS: String(fns.upstreamResponseTimeoutMs),
  };
  const grantUpstream = (p: ProviderName, fn: lambda.Function) => {
    if (p === 'bedrock-claude') {
      fn.addToRolePolicy(new iam.PolicyStatement({
        actions: ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'],
        resources: [
          `arn:${Aws.PARTITION}:bedrock:*::foundation-model/anthropic.claude-*`,
          `arn:${Aws.PARTITION}:bedrock:${Aws.REGION}:${Aws.ACCOUNT_ID}:inference-profile/*anthropic.claude-*`,
        ],
      }));
      NagSuppressions.addResourceSuppressions(fn.role!, [{
        id: 'AwsSolutions-IAM5',
        reason: 'Bedrock model ARNs are limited to Anthropic Claude models (foundation models in any region for cross-region inference profiles, and this account\'s Claude inference profiles); the exact model is checked against the scope policy\'s allow-list by the function',
        appliesTo: [
          'Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/anthropic.claude-*',
          'Resource::arn:<AWS::Partition>:bedrock:<AWS::Region>:<AWS::AccountId>:inference-profile/*anthropic.claude-*',
        ],
      }], true);
    } else {
      secrets.get(p)!.grantRead(fn);
    }
  };

  const make = (name: FunctionName, opts: {
    environment: Record<string, string>;
    timeout: Duration;
    memoryMb: number;
    reserved?: number | null;
    description: string;
    network?: FunctionsProps['dispatcherNetwork'];
  }) => {
    const logGroup = new logs.LogGroup(stack, `${pascal(name)}Logs`, {
      retention: logs.RetentionDays.ONE_YEAR,
      encryptionKey: keys.data,
      removalPolicy: removal,
    });
    // A role of its own, without the managed basic-execution policy: it writes to its own log group only.
    const role = new iam.Role(stack, `${pascal(name)}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `${prefix} ${name} function`,
    });
    logGroup.grantWrite(role);
    const fn = new lambda.Function(stack, pascal(name), {
      description: opts.description,
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(assetDir(stack, name, props.assets)),
      role,
      logGroup,
      timeout: opts.timeout,
      memorySize: opts.memoryMb,
      reservedConcurrentExecutions: opts.reserved ?? undefined,
      environment: { ...common, ...opts.environment },
      environmentEncryption: keys.data,
      tracing: env.tracing ? lambda.Tracing.ACTIVE : lambda.Tracing.DISABLED,
      ...(opts.network && {
        vpc: opts.network.vpc,
        vpcSubnets: opts.network.subnets,
        securityGroups: [opts.network.securityGroup],
      }),
    });
    if (env.tracing) {
      NagSuppressions.addResourceSuppressions(role, [{
        id: 'AwsSolutions-IAM5',
        reason: 'X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions (Resource *), added by the Lambda construct when tracing is on',
        appliesTo: ['Resource::*'],
      }], true);
    }
    functions.set(name, fn);
    return fn;
  };

  // ---- the identity side: revocations, API keys, mail, the pool, HR departments (authorizer, provisioner,
  // scheduler, admin API, audit writer); and the budgets' tables (routes, audit writer, admin API, scheduler)
  const policy = loadScopePolicy();
  /** The named table actions only (no grantReadData/grantWriteData action groups), with the data key's use. */
  const useTable = (table: dynamodb.Table, fn: lambda.Function, actions: ('GetItem' | 'Query' | 'PutItem' | 'UpdateItem' | 'DeleteItem')[]) => {
    // Exact ARNs: the table for item actions, the one update index for Query (Table.grant would add the
    // `/index/*` wildcard as soon as the table has an index).
    const onTable = actions.filter((a) => a !== 'Query');
    if (onTable.length > 0) {
      iam.Grant.addToPrincipal({ grantee: fn, actions: onTable.map((a) => `dynamodb:${a}`), resourceArns: [table.tableArn] });
    }
    if (actions.includes('Query')) {
      iam.Grant.addToPrincipal({
        grantee: fn, actions: ['dynamodb:Query'],
        resourceArns: [`${table.tableArn}/index/${UPDATE_INDEX}`],
      });
    }
    // A table under a customer managed key needs the caller's use of that key as well: the key actions
    // DynamoDB's grantReadData / grantWriteData would add.
    const writes = actions.some((a) => a !== 'GetItem' && a !== 'Query');
    keys.data.grant(fn, 'kms:Decrypt', 'kms:DescribeKey', ...(writes ? ['kms:Encrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*'] : []));
  };
  const identityEnv = env.identity;
  /** GATEWAY_MAIL_FROM only with an SES identity, GATEWAY_SIGN_IN_URL only with a configured domain prefix. */
  const mailEnv: Record<string, string> = {
    ...(identityEnv.sesFromAddress !== null && { GATEWAY_MAIL_FROM: identityEnv.sesFromAddress }),
    ...(identity.signInUrl !== undefined && { GATEWAY_SIGN_IN_URL: identity.signInUrl }),
  };
  const sendMail = (fn: lambda.Function) => {
    if (identityEnv.sesIdentity === null) return;
    fn.addToRolePolicy(new iam.PolicyStatement({
      actions: ['ses:SendEmail', 'ses:SendRawEmail'],
      resources: [sesIdentityArn(identityEnv.sesIdentity)],
    }));
  };
  const onPool = (fn: lambda.Function, actions: string[]) => fn.addToRolePolicy(new iam.PolicyStatement({
    actions: actions.map((a) => `cognito-idp:${a}`),
    resources: [identity.userPool.userPoolArn],
  }));
  // The routes reserve on the usage counters against the settings they mirror; the admin API reads and writes
  // both; the scheduler's budget alerts read both (and write alert claims). The same names as the local stack's
  // (`with_budget_tables` in local/src/environments.rs).
  const budgetTablesEnv = {
    GATEWAY_USAGE_TABLE: tables.usage.tableName,
    GATEWAY_DEPARTMENT_TABLE: tables.departments.tableName,
  };
  const departmentsEnv = {
    GATEWAY_DEPARTMENT_GROUP_PREFIX: policy.department_group_prefix,
    // Sorted by id: the same text as the local stack writes (tests/test_deployment_parity.py).
    GATEWAY_DEPARTMENTS: JSON.stringify(Object.fromEntries(
      Object.entries(config.departments).sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, d]) => [id, d.names]))),
    GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES: String(identityEnv.provisioningUtcOffsetMinutes),
  };

  // Where the audit trail is (the writer writes it, the digest job signs it, the scheduler's rollups read it).
  const auditTrailEnv = {
    GATEWAY_AUDIT_BUCKET: buckets.audit.bucketName,
    GATEWAY_AUDIT_PREFIX: AUDIT_PREFIX,
  };
  const auditBodiesEnv: Record<string, string> = fns.auditBodies
    ? {
        GATEWAY_AUDIT_BODIES: 'on',
        GATEWAY_AUDIT_BODY_MAX_BYTES: String(fns.auditBodyMaxBytes),
        GATEWAY_AUDIT_BUCKET: buckets.audit.bucketName,
        GATEWAY_AUDIT_BODY_KEY_ID: keys.auditBodies.keyArn,
      }
    : { GATEWAY_AUDIT_BODIES: 'off' };

  const authorizer = make('authorizer', {
    description: `${prefix}: REQUEST authorizer (Cognito tokens, scopes)`,
    timeout: Duration.seconds(10),
    memoryMb: 256,
    environment: {
      COGNITO_USER_POOL_ID: identity.userPool.userPoolId,
      COGNITO_APP_CLIENT_IDS: identity.appClient.userPoolClientId,
      GATEWAY_AUDIT_QUEUE_URL: queues.audit.queueUrl,
      GATEWAY_REVOCATION_TABLE: tables.revocations.tableName,
      GATEWAY_REVOCATION_CACHE_SECS: String(env.identity.revocationCacheSeconds),
      GATEWAY_APIKEY_TABLE: tables.apiKeys.tableName,
    },
  });
  queues.audit.grantSendMessages(authorizer);
  // It polls the tables' update indexes (never a read per request).
  useTable(tables.revocations, authorizer, ['Query']);
  useTable(tables.apiKeys, authorizer, ['Query']);

  for (const p of PROVIDERS) {
    const transport = config.providers[p].transport;
    const environment: Record<string, string> = {
      GATEWAY_TRANSPORT: transport,
      GATEWAY_AUDIT_QUEUE_URL: queues.audit.queueUrl,
      // A direct route's calls, or how long a queued route waits for its reply.
      ...upstreamTimeouts,
      ...auditBodiesEnv,
      ...budgetTablesEnv,
      // A changed budget applies within the same bound as a revocation.
      GATEWAY_SETTINGS_CACHE_SECS: String(identityEnv.revocationCacheSeconds),
    };
    // The provider's region, where configured: the route records it on every event and prices by it.
    const region = config.providers[p].region;
    if (region) environment[`GATEWAY_${providerEnvName[p]}_REGION`] = region;
    if (transport === 'direct') {
      Object.assign(environment, upstreamEnv(p));
    } else {
      Object.assign(environment, {
        GATEWAY_REQUEST_QUEUE_URL: queues.requests.get(p)!.queueUrl,
        GATEWAY_REPLY_QUEUE_PREFIX: REPLY_QUEUE_PREFIX,
        GATEWAY_PAYLOAD_BUCKET: buckets.payloads.bucketName,
      });
    }
    const fn = make(p, {
      description: `${prefix}: ${p} route (${transport})`,
      timeout: Duration.seconds(fns.routeTimeoutSecs),
      memoryMb: fns.routeMemoryMb,
      reserved: fns.routeReservedConcurrency,
      environment,
    });
    queues.audit.grantSendMessages(fn);
    // The settings through the update index only (never a read per request). A reservation is one
    // TransactWriteItems of conditional Updates: IAM authorizes each as dynamodb:UpdateItem on its table, and
    // TransactWriteItems is no IAM action of its own.
    useTable(tables.departments, fn, ['Query']);
    useTable(tables.usage, fn, ['UpdateItem']);
    if (fns.auditBodies) {
      putObjects(buckets.audit, fn, `${BODIES_PREFIX}*`);
      // Only data keys bound to the bodies' encryption context (shared/src/audit/bodies.rs).
      fn.addToRolePolicy(new iam.PolicyStatement({
        actions: ['kms:GenerateDataKey'],
        resources: [keys.auditBodies.keyArn],
        conditions: { StringEquals: { 'kms:EncryptionContext:purpose': 'llm-gateway-audit-bodies' } },
      }));
    }
    if (transport === 'direct') {
      grantUpstream(p, fn);
    } else {
      queues.requests.get(p)!.grantSendMessages(fn);
      putObjects(buckets.payloads, fn, '*');
      buckets.payloads.grantRead(fn);
      // Reply queues are made per execution environment under the prefix (SQS-managed SSE), tagged, swept.
      fn.addToRolePolicy(new iam.PolicyStatement({
        actions: [
          'sqs:CreateQueue', 'sqs:TagQueue', 'sqs:GetQueueUrl', 'sqs:GetQueueAttributes',
          'sqs:ReceiveMessage', 'sqs:DeleteMessage',
        ],
        resources: [replyQueueArn],
      }));
      NagSuppressions.addResourceSuppressions(fn.role!, [{
        id: 'AwsSolutions-IAM5',
        reason: 'reply queues are created at run time, one per execution environment, so they are granted by name prefix (llm-gateway-reply-*) in this account and region only',
        appliesTo: [`Resource::arn:<AWS::Partition>:sqs:<AWS::Region>:<AWS::AccountId>:${REPLY_QUEUE_PREFIX}*`],
      }], true);
    }
  }

  if (queued.length > 0) {
    const environment: Record<string, string> = {
      GATEWAY_DISPATCH_QUEUE_URLS: queued.map((p) => `${p}=${queues.requests.get(p)!.queueUrl}`).join(','),
      GATEWAY_REPLY_QUEUE_PREFIX: REPLY_QUEUE_PREFIX,
      GATEWAY_PAYLOAD_BUCKET: buckets.payloads.bucketName,
      GATEWAY_DISPATCH_VISIBILITY_SECS: String(queues.dispatchVisibilitySecs),
      GATEWAY_DISPATCH_MAX_RECEIVES: String(fns.dispatchMaxReceives),
      GATEWAY_AUDIT_QUEUE_URL: queues.audit.queueUrl,
      ...upstreamTimeouts,
    };
    for (const p of queued) Object.assign(environment, upstreamEnv(p));
    const dispatcher = make('dispatcher', {
      description: `${prefix}: queue transport, relays queued requests to ${queued.join(', ')}`,
      timeout: Duration.seconds(fns.routeTimeoutSecs),
      memoryMb: fns.routeMemoryMb,
      reserved: fns.dispatcherReservedConcurrency,
      environment,
      network: props.dispatcherNetwork,
    });
    // Each request queue's poller stays below the dispatcher's reserved concurrency: beyond it Lambda
    // would throttle, and a throttled message returns to its queue, counting toward the dead-letter limit.
    const maxConcurrency = dispatcherMaxConcurrency(fns.dispatcherReservedConcurrency, queued.length);
    for (const p of queued) {
      // The dispatcher keeps the visibility up while a stream runs (ChangeMessageVisibility: in consume).
      dispatcher.addEventSource(new sources.SqsEventSource(queues.requests.get(p)!, {
        batchSize: 1,
        reportBatchItemFailures: true,
        maxConcurrency,
      }));
      grantUpstream(p, dispatcher);
    }
    putObjects(buckets.payloads, dispatcher, '*');
    buckets.payloads.grantRead(dispatcher);
    queues.audit.grantSendMessages(dispatcher);
    dispatcher.addToRolePolicy(new iam.PolicyStatement({
      actions: ['sqs:SendMessage', 'sqs:GetQueueUrl'],
      resources: [replyQueueArn],
    }));
    NagSuppressions.addResourceSuppressions(dispatcher.role!, [{
      id: 'AwsSolutions-IAM5',
      reason: 'replies go to run-time reply queues, granted by name prefix (llm-gateway-reply-*) in this account and region only',
      appliesTo: [`Resource::arn:<AWS::Partition>:sqs:<AWS::Region>:<AWS::AccountId>:${REPLY_QUEUE_PREFIX}*`],
    }], true);
  }

  const writer = make('audit-writer', {
    description: `${prefix}: audit queue -> gzip JSON lines in S3`,
    timeout: Duration.seconds(fns.auditWriterTimeoutSecs),
    memoryMb: 512,
    environment: {
      ...auditTrailEnv,
      GATEWAY_APIKEY_TABLE: tables.apiKeys.tableName,
      GATEWAY_USAGE_TABLE: tables.usage.tableName,
    },
  });
  // A key's last use is recorded off the request path, from its audit events.
  useTable(tables.apiKeys, writer, ['UpdateItem']);
  // Settling a request is one transaction: the marker Put (conditional, so a retried batch settles nothing
  // twice) and an Update per counter.
  useTable(tables.usage, writer, ['PutItem', 'UpdateItem']);
  writer.addEventSource(new sources.SqsEventSource(queues.audit, {
    batchSize: 100,
    maxBatchingWindow: Duration.seconds(5),
    reportBatchItemFailures: true,
  }));
  putObjects(buckets.audit, writer, `${AUDIT_PREFIX}*`);

  const digest = make('audit-digest', {
    description: `${prefix}: hourly signed digest of the audit trail`,
    timeout: Duration.minutes(15),
    memoryMb: 1024,
    reserved: 1,
    environment: {
      ...auditTrailEnv,
      GATEWAY_AUDIT_DIGEST_KEY_ID: keys.auditDigest.keyArn,
      GATEWAY_AUDIT_DIGEST_PREFIX: DIGEST_PREFIX,
      GATEWAY_AUDIT_DIGEST_GRACE_SECS: String(fns.auditDigestGraceSecs),
      GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS: String(fns.routeTimeoutSecs),
      GATEWAY_AUDIT_DIGEST_MAX_HOURS: String(fns.auditDigestMaxHours),
    },
  });
  digest.addToRolePolicy(new iam.PolicyStatement({
    actions: ['s3:ListBucket', 's3:ListBucketVersions'],
    resources: [buckets.audit.bucketArn],
  }));
  buckets.audit.grantRead(digest, `${AUDIT_PREFIX}*`);
  buckets.audit.grantRead(digest, `${DIGEST_PREFIX}*`);
  putObjects(buckets.audit, digest, `${AUDIT_PREFIX}*`);
  putObjects(buckets.audit, digest, `${DIGEST_PREFIX}*`);
  keys.auditDigest.grant(digest, 'kms:Sign');

  new events.Rule(stack, 'AuditDigestSchedule', {
    description: `${prefix}: audit digest, hourly, a minute after the grace period`,
    schedule: events.Schedule.cron({ minute: String(Math.ceil(fns.auditDigestGraceSecs / 60) + 1) }),
    targets: [new targets.LambdaFunction(digest, RULE_RETRY)],
  });
  alarms.push(new cw.Alarm(stack, 'AuditDigestErrors', {
    alarmDescription: `${prefix}: the audit digest job failed (KMS or S3 failure, or a deleted digest)`,
    metric: digest.metricErrors({ period: Duration.hours(1) }),
    threshold: 1,
    evaluationPeriods: 1,
    comparisonOperator: cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    treatMissingData: cw.TreatMissingData.NOT_BREACHING,
  }));

  // ---- scheduler: hourly reply-queue sweep (environments that are gone leave their reply queue behind), the
  // daily user-dates job (starters enabled and invited, leavers disabled and signed out), budget alerts every
  // five minutes, and the usage rollups from the audit trail into the reports bucket (daily, and the monthly
  // chargeback). One function, each rule's event naming its job (functions/scheduler/src/lib.rs).
  const scheduler = make('scheduler', {
    description: `${prefix}: scheduled jobs (reply-queue sweep, daily user dates, budget alerts, usage rollups, chargeback)`,
    // The monthly chargeback reads a month of the audit trail: Lambda's longest run.
    timeout: Duration.minutes(15),
    memoryMb: 256,
    // Two: the five-minute budget alerts must not be throttled while a rollup runs. Every job is safe to
    // run beside another (rollups rewrite whole reports; alerts claim each mail first).
    reserved: 2,
    environment: {
      GATEWAY_REPLY_QUEUE_PREFIX: REPLY_QUEUE_PREFIX,
      COGNITO_USER_POOL_ID: identity.userPool.userPoolId,
      ...departmentsEnv,
      GATEWAY_REVOCATION_TABLE: tables.revocations.tableName,
      GATEWAY_AUDIT_QUEUE_URL: queues.audit.queueUrl,
      // The alerts mail from the same SES identity as the invitations (GATEWAY_MAIL_FROM, when configured).
      ...mailEnv,
      ...budgetTablesEnv,
      ...auditTrailEnv,
      GATEWAY_REPORTS_BUCKET: buckets.reports.bucketName,
    },
  });
  onPool(scheduler, [
    'ListUsers', 'ListUsersInGroup', 'AdminDisableUser', 'AdminEnableUser', 'AdminUserGlobalSignOut',
    'AdminSetUserPassword', 'AdminGetUser',
  ]);
  useTable(tables.revocations, scheduler, ['PutItem', 'UpdateItem']);
  // Budget alerts: every department's settings through the update index, its month counter by key, and a
  // once-only marker per threshold and month, claimed with a conditional Put and deleted again if the mail
  // fails (the only DeleteItem in the stack).
  useTable(tables.departments, scheduler, ['Query']);
  useTable(tables.usage, scheduler, ['GetItem', 'PutItem', 'DeleteItem']);
  sendMail(scheduler);
  queues.audit.grantSendMessages(scheduler);
  // The rollups read the audit trail as the digest job lists it (S3AuditStore::list_latest: ListObjectVersions,
  // then GetObject of each latest version by key), under audit/ only and without the digest job's writes.
  readObjects(buckets.audit, scheduler, [AUDIT_PREFIX], ['s3:ListBucket', 's3:ListBucketVersions']);
  // The daily rollups, which the monthly job also rewrites, and the month's chargeback (JSON and CSV).
  putObjects(buckets.reports, scheduler, `${USAGE_REPORT_PREFIX}*`);
  putObjects(buckets.reports, scheduler, `${CHARGEBACK_REPORT_PREFIX}*`);
  scheduler.addToRolePolicy(new iam.PolicyStatement({
    actions: ['sqs:ListQueueTags', 'sqs:DeleteQueue'],
    resources: [replyQueueArn],
  }));
  // ListQueues has no resource-level permission; the prefix filter is in the call, and the deletes
  // above are limited to reply queues.
  scheduler.addToRolePolicy(new iam.PolicyStatement({ actions: ['sqs:ListQueues'], resources: ['*'] }));
  NagSuppressions.addResourceSuppressions(scheduler.role!, [{
    id: 'AwsSolutions-IAM5',
    reason: 'sqs:ListQueues supports no resource-level permission (Resource * is the only form AWS accepts); the scheduler lists by the reply-queue prefix and may tag-read and delete only queues named llm-gateway-reply-* in this account and region',
    appliesTo: ['Resource::*', `Resource::arn:<AWS::Partition>:sqs:<AWS::Region>:<AWS::AccountId>:${REPLY_QUEUE_PREFIX}*`],
  }], true);
  // Every job the same way: the event names it; EventBridge retries the delivery, Lambda a failed run (twice, as
  // any asynchronous invocation), which the scheduler's Errors alarm reports (lib/operations.ts); each job is
  // idempotent, so a retried run is harmless.
  const scheduleJob = (id: string, job: SchedulerJob, schedule: events.Schedule, what: string) => new events.Rule(stack, id, {
    description: `${prefix}: ${what}`,
    schedule,
    targets: [new targets.LambdaFunction(scheduler, { event: events.RuleTargetInput.fromObject({ job }), ...RULE_RETRY })],
  });
  scheduleJob('ReplyQueueSweepSchedule', 'sweep-reply-queues', events.Schedule.rate(Duration.hours(1)),
    'sweep reply queues of environments that are gone, hourly');
  const userDates = dailyUtcCron(USER_DATES_LOCAL_MINUTE, identityEnv.provisioningUtcOffsetMinutes);
  scheduleJob('UserDatesSchedule', 'user-dates',
    events.Schedule.cron({ minute: String(userDates.minute), hour: String(userDates.hour) }),
    `users' start and end dates, daily at 00:05 ${utcOffsetLabel(identityEnv.provisioningUtcOffsetMinutes)}`);
  scheduleJob('BudgetAlertsSchedule', 'budget-alerts', events.Schedule.rate(BUDGET_ALERTS_RATE),
    `mail department contacts whose month's usage passed an alert threshold, every ${BUDGET_ALERTS_RATE.toMinutes()} minutes`);
  scheduleJob('UsageRollupSchedule', 'usage-rollup',
    events.Schedule.cron({ minute: String(USAGE_ROLLUP_UTC.minute), hour: String(USAGE_ROLLUP_UTC.hour) }),
    'yesterday\'s usage per department, user, provider and model from the audit trail, daily');
  scheduleJob('ChargebackSchedule', 'chargeback',
    events.Schedule.cron({ minute: String(CHARGEBACK_UTC.minute), hour: String(CHARGEBACK_UTC.hour), day: String(CHARGEBACK_UTC.day) }),
    'the month before\'s chargeback report from the audit trail, monthly');
  scheduleJob('UsagePlansSchedule', 'usage-plans', events.Schedule.rate(USAGE_PLANS_RATE),
    `departments' usage plans put back to their settings, every ${USAGE_PLANS_RATE.toMinutes()} minutes`);

  // ---- provisioner: HR files (age-encrypted) from the provisioning bucket, through EventBridge
  const identitySecret = new sm.Secret(stack, 'ProvisioningIdentitySecret', {
    description: `${prefix}: age identity (AGE-SECRET-KEY-1...) that opens HR files; set with put-secret-value after deploy`,
    encryptionKey: keys.data,
    removalPolicy: removal,
  });
  NagSuppressions.addResourceSuppressions(identitySecret, [{
    id: 'AwsSolutions-SMG4',
    reason: 'an age identity is rotated by generating a new one (age-keygen) and giving HR its new recipient; Secrets Manager cannot rotate it alone, since files encrypted to the old recipient must still open until HR switches',
  }]);
  const provisioner = make('provisioner', {
    description: `${prefix}: bulk provisioning from HR files (incoming/ applies, dry-run/ plans)`,
    timeout: Duration.minutes(15),
    memoryMb: 512,
    // One run at a time: two files applied at once would plan against each other's half-applied state.
    reserved: 1,
    environment: {
      COGNITO_USER_POOL_ID: identity.userPool.userPoolId,
      GATEWAY_PROVISIONING_BUCKET: buckets.provisioning.bucketName,
      GATEWAY_REPORTS_BUCKET: buckets.reports.bucketName,
      GATEWAY_PROVISIONING_IDENTITY_SECRET_ID: identitySecret.secretArn,
      ...departmentsEnv,
      GATEWAY_REVOCATION_TABLE: tables.revocations.tableName,
      GATEWAY_AUDIT_QUEUE_URL: queues.audit.queueUrl,
      ...mailEnv,
    },
  });
  identitySecret.grantRead(provisioner);
  for (const p of [PROVISIONING_APPLY_PREFIX, PROVISIONING_DRY_RUN_PREFIX]) {
    buckets.provisioning.grantRead(provisioner, `${p}*`);
  }
  putObjects(buckets.reports, provisioner, `${PROVISIONING_REPORT_PREFIX}*`);
  onPool(provisioner, [
    'ListUsers', 'ListUsersInGroup', 'AdminCreateUser', 'AdminUpdateUserAttributes', 'AdminDeleteUserAttributes',
    'AdminAddUserToGroup', 'AdminRemoveUserFromGroup', 'AdminEnableUser', 'AdminDisableUser',
    'AdminUserGlobalSignOut', 'AdminSetUserPassword', 'AdminGetUser',
  ]);
  useTable(tables.revocations, provisioner, ['PutItem', 'UpdateItem']);
  sendMail(provisioner);
  queues.audit.grantSendMessages(provisioner);
  new events.Rule(stack, 'ProvisioningFileRule', {
    description: `${prefix}: a new HR file in the provisioning bucket runs the provisioner`,
    eventPattern: {
      source: ['aws.s3'],
      detailType: ['Object Created'],
      detail: {
        bucket: { name: [buckets.provisioning.bucketName] },
        object: { key: [{ prefix: PROVISIONING_APPLY_PREFIX }, { prefix: PROVISIONING_DRY_RUN_PREFIX }] },
      },
    },
    targets: [new targets.LambdaFunction(provisioner, RULE_RETRY)],
  });

  // ---- admin API (lambda_http behind its own REST API, lib/api.ts): users of the pool, HR file uploads
  // (presigned PUTs under incoming/ and dry-run/), the provisioner's reports, the chargeback reports, API keys,
  // department budgets
  const adminApi = make('admin-api', {
    description: `${prefix}: admin API (users, HR file uploads, provisioning and chargeback reports, API keys, budgets)`,
    timeout: ADMIN_API_TIMEOUT,
    memoryMb: 256,
    environment: {
      COGNITO_USER_POOL_ID: identity.userPool.userPoolId,
      ...departmentsEnv,
      GATEWAY_PROVISIONING_BUCKET: buckets.provisioning.bucketName,
      GATEWAY_REPORTS_BUCKET: buckets.reports.bucketName,
      GATEWAY_REVOCATION_TABLE: tables.revocations.tableName,
      GATEWAY_APIKEY_TABLE: tables.apiKeys.tableName,
      ...budgetTablesEnv,
      GATEWAY_AUDIT_QUEUE_URL: queues.audit.queueUrl,
      ...mailEnv,
      GATEWAY_UPLOAD_URL_TTL_SECS: String(UPLOAD_URL_TTL_SECS),
    },
  });
  onPool(adminApi, [
    'ListUsers', 'ListUsersInGroup', 'AdminGetUser', 'AdminCreateUser', 'AdminUpdateUserAttributes',
    'AdminDeleteUserAttributes', 'AdminAddUserToGroup', 'AdminRemoveUserFromGroup', 'AdminListGroupsForUser',
    'AdminDisableUser', 'AdminEnableUser', 'AdminDeleteUser', 'AdminResetUserPassword', 'AdminUserGlobalSignOut',
    'AdminSetUserPassword', 'DescribeUserPool',
  ]);
  // A presigned PUT carries the function's permissions: s3:PutObject under the two prefixes only.
  for (const p of [PROVISIONING_APPLY_PREFIX, PROVISIONING_DRY_RUN_PREFIX]) putObjects(buckets.provisioning, adminApi, `${p}*`);
  // The provisioner's reports are listed, then read; a month's chargeback report is read by its key, and one
  // not written yet must answer NoSuchKey (404 "no chargeback report yet"), so its prefix is listable too.
  readObjects(buckets.reports, adminApi, [PROVISIONING_REPORT_PREFIX, CHARGEBACK_REPORT_PREFIX, USAGE_REPORT_PREFIX], ['s3:ListBucket']);
  useTable(tables.revocations, adminApi, ['GetItem', 'PutItem', 'UpdateItem']);
  // Listing keys reads the update index; one key is read, issued, rotated and revoked by its id.
  useTable(tables.apiKeys, adminApi, ['GetItem', 'PutItem', 'UpdateItem', 'Query']);
  // Settings are read and replaced by department, listed through the update index; usage is read by counter.
  useTable(tables.departments, adminApi, ['GetItem', 'PutItem', 'Query']);
  useTable(tables.usage, adminApi, ['GetItem']);
  sendMail(adminApi);
  queues.audit.grantSendMessages(adminApi);

  // The grant methods' S3/KMS action groups and object ARNs under a bucket: the wildcards cdk-nag
  // reports that are not resource wildcards. A `Resource::*` is never suppressed here.
  for (const fn of functions.values()) {
    NagSuppressions.addResourceSuppressions(fn.role!, [{
      id: 'AwsSolutions-IAM5',
      reason: 'object-level S3 grants (grantRead, s3:PutObject, s3:GetObject) name one bucket and, but for the payload bucket, one prefix (the audit bucket\'s audit/*, bodies/*, digests/*; the provisioning bucket\'s incoming/*, dry-run/*; the reports bucket\'s reports/provisioning/*, reports/usage/*, reports/chargeback/*); object keys are made per request, hour, day or month at run time. The action groups (s3:GetObject*, s3:GetBucket*, s3:List*, kms:GenerateDataKey*, kms:ReEncrypt*) are those of the CDK grant methods on that bucket, queue or table (the tables\' key actions, as DynamoDB\'s grantWriteData names them) and the data key only',
      appliesTo: [
        { regex: '/^Action::(s3:(GetObject|GetBucket|List)\\*|kms:(GenerateDataKey|ReEncrypt)\\*)$/' },
        { regex: '/^Resource::<(AuditBucket|PayloadBucket|ProvisioningBucket|ReportsBucket)[A-F0-9]{8}\\.Arn>\\/.*\\*$/' },
      ],
    }], true);
  }

  return { functions, secrets, alarms, provisioningIdentity: identitySecret };
}

/**
 * An equal share of the dispatcher's reserved concurrency per request queue (Lambda's range is 2 to
 * 1000); none when the dispatcher has no reservation (the account's pool is the bound).
 */
export function dispatcherMaxConcurrency(reserved: number | null, queues: number): number | undefined {
  if (reserved === null || queues === 0) return undefined;
  return Math.min(1000, Math.max(2, Math.floor(reserved / queues)));
}

/** `UTC+09:00` for 540: the offset as people write it, for descriptions. */
export function utcOffsetLabel(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `UTC${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

function assetDir(stack: Stack, name: FunctionName, mode: AssetMode): string {
  const dir = path.join(lambdaOutputDir(), name);
  const built = existsSync(path.join(dir, 'bootstrap'));
  if (mode === 'real' && !built) {
    throw new Error(`${name}: no ${path.join(dir, 'bootstrap')}; run cargo lambda build --release --arm64 first (README.md)`);
  }
  if (mode === 'placeholder' || !built) {
    Annotations.of(stack).addWarningV2(`gateway:placeholder-${name}`,
      `${name}: placeholder code (test mode); deploy with -c assets=real after cargo lambda build`);
    return PLACEHOLDER_ASSET;
  }
  return dir;
}
