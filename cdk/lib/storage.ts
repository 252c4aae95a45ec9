// Keys, buckets and queues: where the gateway keeps data at rest, all encrypted, TLS-only and private.
import {
  Aws, Duration, RemovalPolicy, Stack,
  aws_cloudwatch as cw,
  aws_dynamodb as dynamodb,
  aws_iam as iam,
  aws_kms as kms,
  aws_s3 as s3,
  aws_sqs as sqs,
} from 'aws-cdk-lib';
import { EnvironmentConfig, FunctionsConfig, PROVIDERS, ProviderName, GatewayConfig } from './config';
import { pascal, resourceName } from './names';

export interface Keys {
  /** Queues, payload and audit buckets, log groups, function environments, secrets. */
  data: kms.Key;
  /** The routes' data keys for sealed request/response bodies. */
  auditBodies: kms.Key;
  /** RSA_3072 SIGN_VERIFY: the hourly audit digests. */
  auditDigest: kms.Key;
}

export function createKeys(stack: Stack, prefix: string): Keys {
  const data = new kms.Key(stack, 'DataKey', {
    description: `${prefix}: queues, payloads, logs, function environments`,
    enableKeyRotation: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  // CloudWatch Logs encrypts the function log groups with the data key, only for this account's groups.
  data.addToResourcePolicy(new iam.PolicyStatement({
    principals: [new iam.ServicePrincipal(`logs.${Aws.REGION}.amazonaws.com`)],
    actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
    resources: ['*'],
    conditions: {
      ArnLike: { 'kms:EncryptionContext:aws:logs:arn': `arn:${Aws.PARTITION}:logs:${Aws.REGION}:${Aws.ACCOUNT_ID}:*` },
    },
  }));
  const auditBodies = new kms.Key(stack, 'AuditBodiesKey', {
    description: `${prefix}: seals audited request and response bodies`,
    enableKeyRotation: true,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const auditDigest = new kms.Key(stack, 'AuditDigestKey', {
    description: `${prefix}: signs the hourly audit digests (RSASSA_PSS_SHA_256)`,
    keySpec: kms.KeySpec.RSA_3072,
    keyUsage: kms.KeyUsage.SIGN_VERIFY,
    removalPolicy: RemovalPolicy.RETAIN,
  });
  return { data, auditBodies, auditDigest };
}

export interface Buckets {
  accessLogs: s3.Bucket;
  audit: s3.Bucket;
  payloads: s3.Bucket;
  /** HR files, age-encrypted (incoming/ applies, dry-run/ plans); S3 sends its events to EventBridge. */
  provisioning: s3.Bucket;
  /** Provisioning reports (and, later, chargeback reports). */
  reports: s3.Bucket;
}

/**
 * The baseline every data bucket shares: SSE-KMS under `key` with a bucket key, all public access
 * blocked, TLS only, server access logs into `accessLogs` under `logPrefix`. `props` adds the rest.
 */
export function privateBucket(
  stack: Stack, id: string, key: kms.IKey, accessLogs: s3.IBucket, logPrefix: string, props: s3.BucketProps,
): s3.Bucket {
  return new s3.Bucket(stack, id, {
    encryption: s3.BucketEncryption.KMS,
    encryptionKey: key,
    bucketKeyEnabled: true,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    enforceSSL: true,
    serverAccessLogsBucket: accessLogs,
    serverAccessLogsPrefix: logPrefix,
    ...props,
  });
}

export function createBuckets(stack: Stack, env: EnvironmentConfig, keys: Keys, removal: RemovalPolicy): Buckets {
  const accessLogs = new s3.Bucket(stack, 'AccessLogsBucket', {
    // S3 server access logging delivers only to SSE-S3 buckets.
    encryption: s3.BucketEncryption.S3_MANAGED,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    enforceSSL: true,
    versioned: true,
    lifecycleRules: [{ expiration: Duration.days(365), noncurrentVersionExpiration: Duration.days(30) }],
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const audit = privateBucket(stack, 'AuditBucket', keys.data, accessLogs, 'audit/', {
    objectLockEnabled: true,
    objectLockDefaultRetention: s3.ObjectLockRetention.compliance(Duration.days(env.auditRetentionDays)),
    versioned: true,
    // No expiration: Object Lock keeps every version for the retention period anyway.
    lifecycleRules: [{
      transitions: [{ storageClass: s3.StorageClass.GLACIER, transitionAfter: Duration.days(env.auditGlacierAfterDays) }],
    }],
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const payloads = privateBucket(stack, 'PayloadBucket', keys.data, accessLogs, 'payloads/', {
    lifecycleRules: [{ expiration: Duration.days(env.payloadExpiryDays), abortIncompleteMultipartUploadAfter: Duration.days(1) }],
    removalPolicy: removal,
  });
  const provisioning = privateBucket(stack, 'ProvisioningBucket', keys.data, accessLogs, 'provisioning/', {
    versioned: true,
    // The files are encrypted with age as well; once applied they are history, kept a month.
    lifecycleRules: [{ expiration: Duration.days(30), noncurrentVersionExpiration: Duration.days(30), abortIncompleteMultipartUploadAfter: Duration.days(1) }],
    removalPolicy: removal,
  });
  // New objects go to EventBridge, which runs the provisioner. Set on the resource itself: the
  // construct's `eventBridgeEnabled` goes through a notifications custom resource (a Lambda of its own).
  (provisioning.node.defaultChild as s3.CfnBucket).notificationConfiguration = {
    eventBridgeConfiguration: { eventBridgeEnabled: true },
  };
  const reports = privateBucket(stack, 'ReportsBucket', keys.data, accessLogs, 'reports/', {
    versioned: true,
    lifecycleRules: [{ expiration: Duration.days(400), noncurrentVersionExpiration: Duration.days(30) }],
    removalPolicy: RemovalPolicy.RETAIN,
  });
  return { accessLogs, audit, payloads, provisioning, reports };
}

export interface Queues {
  audit: sqs.Queue;
  /** One per provider whose transport is `queue`. */
  requests: Map<ProviderName, sqs.Queue>;
  /** The request queues' visibility timeout, which the dispatcher is told too. */
  dispatchVisibilitySecs: number;
  /** One alarm per dead-letter queue (at one visible message). */
  dlqAlarms: cw.Alarm[];
  dlqs: sqs.Queue[];
}

/** The SQS names the stack gives its queues; the local stack names its own the same way. */
export function queueNames(config: GatewayConfig, envName: string): { audit: string; requests: Record<string, string> } {
  const prefix = `${config.project}-${envName}`;
  return {
    audit: `${prefix}-audit`,
    requests: Object.fromEntries(PROVIDERS.filter((p) => config.providers[p].transport === 'queue')
      .map((p) => [p, `${prefix}-requests-${p}`])),
  };
}

export function createQueues(stack: Stack, config: GatewayConfig, envName: string, fns: FunctionsConfig, keys: Keys): Queues {
  const dlqAlarms: cw.Alarm[] = [];
  const dlqs: sqs.Queue[] = [];
  const queueWithDlq = (id: string, name: string, visibility: Duration, maxReceiveCount: number) => {
    const dlq = new sqs.Queue(stack, `${id}Dlq`, {
      queueName: `${name}-dlq`,
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: keys.data,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    const queue = new sqs.Queue(stack, id, {
      queueName: name,
      encryption: sqs.QueueEncryption.KMS,
      encryptionMasterKey: keys.data,
      enforceSSL: true,
      visibilityTimeout: visibility,
      deadLetterQueue: { queue: dlq, maxReceiveCount },
    });
    dlqs.push(dlq);
    dlqAlarms.push(new cw.Alarm(stack, `${id}DlqAlarm`, {
      alarmDescription: `${name}: messages in the dead-letter queue`,
      metric: dlq.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5) }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cw.TreatMissingData.NOT_BREACHING,
    }));
    return queue;
  };
  const names = queueNames(config, envName);
  // Lambda's advice: visibility at least six times the consumer's timeout.
  const audit = queueWithDlq('AuditQueue', names.audit, Duration.seconds(6 * fns.auditWriterTimeoutSecs), 5);
  // Lambda refuses an SQS event source whose queue's visibility timeout is below the function's
  // timeout; the dispatcher runs as long as a route (a stream), so the queues get at least that.
  const dispatchVisibilitySecs = Math.max(fns.dispatchVisibilitySecs, fns.routeTimeoutSecs);
  const requests = new Map<ProviderName, sqs.Queue>();
  for (const [p, name] of Object.entries(names.requests) as [ProviderName, string][]) {
    requests.set(p, queueWithDlq(`RequestQueue${pascal(p)}`, name, Duration.seconds(dispatchVisibilitySecs), fns.dispatchMaxReceives));
  }
  return { audit, requests, dispatchVisibilitySecs, dlqAlarms, dlqs };
}

/** The revocation table's key and TTL attribute (the contract in docs; shared by authorizer, provisioner,
 * scheduler and admin API). */
export const REVOCATION_PARTITION_KEY = 'sub';
export const REVOCATION_TTL_ATTRIBUTE = 'expires_at';
/** The API key table's key (`gateway_shared::apikeys`; authorizer, admin API and audit writer). */
export const APIKEY_PARTITION_KEY = 'key_id';
/** The department settings table's key (`gateway_shared::budgets::settings`; routes and admin API). */
export const DEPARTMENT_PARTITION_KEY = 'department';
/** The usage table's key and TTL attribute (`gateway_shared::budgets::counters`; routes, audit writer, admin API). */
export const USAGE_PARTITION_KEY = 'counter';
export const USAGE_TTL_ATTRIBUTE = 'expires_at';

/** The index functions poll on every mirrored table (`UPDATE_INDEX` in shared/src/mirror.rs). */
export const UPDATE_INDEX = 'by-update';

/** The DynamoDB tables of the stack: three that functions mirror in memory (shared/src/mirror.rs), and the usage counters. */
export interface Tables {
  /**
   * `<project>-<env>-revocations`: per Cognito `sub`, whether the user is disabled and the time before which
   * its tokens are refused (`revoked_before`); sign-out records expire through the `expires_at` TTL.
   */
  revocations: dynamodb.Table;
  /**
   * `<project>-<env>-apikeys`: per key id, a department's or application's API key (its hash, scopes,
   * expiry, revocation, last use). No TTL: expired and revoked keys stay listed, and the authorizer names
   * why it refuses one (a TTL on the key's `expires_at` would delete the record it names).
   */
  apiKeys: dynamodb.Table;
  /**
   * `<project>-<env>-departments`: per department, its budget settings (limits, alert thresholds, contacts),
   * mirrored by the routes. No TTL: settings stay until an administrator changes them.
   */
  departments: dynamodb.Table;
  /**
   * `<project>-<env>-usage`: the budget counters (a month's or a minute's usage per department and user, plus
   * open reservations) and the markers of settled requests, each expiring through `expires_at`. Read and
   * written by key only, so no index: nothing mirrors it.
   */
  usage: dynamodb.Table;
}

/**
 * A table of the stack: a string partition key, on demand, point-in-time recovery, encrypted with the data
 * key; in prod retained with deletion protection, like the other stateful resources.
 */
export function createTable(
  stack: Stack, id: string, tableName: string, partitionKey: string, ttlAttribute: string | undefined,
  keys: Keys, removal: RemovalPolicy,
): dynamodb.Table {
  return new dynamodb.Table(stack, id, {
    tableName,
    partitionKey: { name: partitionKey, type: dynamodb.AttributeType.STRING },
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    encryption: dynamodb.TableEncryption.CUSTOMER_MANAGED,
    encryptionKey: keys.data,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    timeToLiveAttribute: ttlAttribute,
    deletionProtection: removal === RemovalPolicy.RETAIN,
    removalPolicy: removal,
  });
}

/**
 * A table functions mirror in memory: `createTable`'s, plus the `by-update` index they poll for changes
 * (one partition `rev`, sorted by `updated_ms`), so that no request waits on DynamoDB.
 */
export function createMirroredTable(
  stack: Stack, id: string, tableName: string, partitionKey: string, ttlAttribute: string | undefined,
  keys: Keys, removal: RemovalPolicy,
): dynamodb.Table {
  const table = createTable(stack, id, tableName, partitionKey, ttlAttribute, keys, removal);
  table.addGlobalSecondaryIndex({
    indexName: UPDATE_INDEX,
    partitionKey: { name: 'rev', type: dynamodb.AttributeType.STRING },
    sortKey: { name: 'updated_ms', type: dynamodb.AttributeType.NUMBER },
    projectionType: dynamodb.ProjectionType.ALL,
  });
  return table;
}

export function createTables(stack: Stack, prefix: string, keys: Keys, removal: RemovalPolicy): Tables {
  return {
    revocations: createMirroredTable(stack, 'RevocationsTable', resourceName(prefix, 'revocations'),
      REVOCATION_PARTITION_KEY, REVOCATION_TTL_ATTRIBUTE, keys, removal),
    apiKeys: createMirroredTable(stack, 'ApiKeysTable', resourceName(prefix, 'apikeys'),
      APIKEY_PARTITION_KEY, undefined, keys, removal),
    departments: createMirroredTable(stack, 'DepartmentsTable', resourceName(prefix, 'departments'),
      DEPARTMENT_PARTITION_KEY, undefined, keys, removal),
    usage: createTable(stack, 'UsageTable', resourceName(prefix, 'usage'),
      USAGE_PARTITION_KEY, USAGE_TTL_ATTRIBUTE, keys, removal),
  };
}
