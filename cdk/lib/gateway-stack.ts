// The gateway's stack, first slice: keys, buckets, queues, functions, event sources, the digest schedule.
// API Gateway, WAF, Cognito and the VPC come in the next slice (README.md).
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  Annotations, Aws, CfnOutput, Duration, RemovalPolicy, Stack, StackProps,
  aws_cloudwatch as cw,
  aws_cognito as cognito,
  aws_events as events,
  aws_events_targets as targets,
  aws_iam as iam,
  aws_kms as kms,
  aws_lambda as lambda,
  aws_lambda_event_sources as sources,
  aws_logs as logs,
  aws_s3 as s3,
  aws_secretsmanager as sm,
  aws_sqs as sqs,
} from 'aws-cdk-lib';
import { NagSuppressions } from 'cdk-nag';
import { Construct } from 'constructs';
import { EnvironmentName, GatewayConfig, PROVIDERS, ProviderName } from './config';

export const FUNCTIONS = [
  'authorizer', 'azure-openai', 'bedrock-claude', 'gemini', 'dispatcher', 'audit-writer', 'audit-digest',
] as const;
export type FunctionName = (typeof FUNCTIONS)[number];

export const REPLY_QUEUE_PREFIX = 'llm-gateway-reply-';
export const AUDIT_PREFIX = 'audit/';
export const DIGEST_PREFIX = 'digests/';
export const BODIES_PREFIX = 'bodies/';
export const SCOPE_POLICY_FILE = path.join(__dirname, '..', '..', 'policy', 'scopes.json');
export const PLACEHOLDER_ASSET = path.join(__dirname, '..', 'assets', 'placeholder');

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

export interface GatewayStackProps extends StackProps {
  config: GatewayConfig;
  envName: EnvironmentName;
  assets: AssetMode;
}

const providerEnvName: Record<ProviderName, string> = {
  'azure-openai': 'AZURE_OPENAI',
  'bedrock-claude': 'BEDROCK',
  gemini: 'GEMINI',
};

export class GatewayStack extends Stack {
  readonly functions = new Map<FunctionName, lambda.Function>();

  constructor(scope: Construct, id: string, props: GatewayStackProps) {
    super(scope, id, props);
    const { config, envName } = props;
    const env = config.environments[envName];
    const fns = config.functions;
    const prefix = `${config.project}-${envName}`;
    const removal = envName === 'prod' ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    // ---- keys
    const dataKey = new kms.Key(this, 'DataKey', {
      description: `${prefix}: queues, payloads, logs, function environments`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // CloudWatch Logs encrypts the function log groups with the data key, only for this account's groups.
    dataKey.addToResourcePolicy(new iam.PolicyStatement({
      principals: [new iam.ServicePrincipal(`logs.${Aws.REGION}.amazonaws.com`)],
      actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
      resources: ['*'],
      conditions: {
        ArnLike: { 'kms:EncryptionContext:aws:logs:arn': `arn:${Aws.PARTITION}:logs:${Aws.REGION}:${Aws.ACCOUNT_ID}:*` },
      },
    }));
    const auditBodiesKey = new kms.Key(this, 'AuditBodiesKey', {
      description: `${prefix}: seals audited request and response bodies`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const auditDigestKey = new kms.Key(this, 'AuditDigestKey', {
      description: `${prefix}: signs the hourly audit digests (RSASSA_PSS_SHA_256)`,
      keySpec: kms.KeySpec.RSA_3072,
      keyUsage: kms.KeyUsage.SIGN_VERIFY,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // ---- buckets
    const accessLogs = new s3.Bucket(this, 'AccessLogsBucket', {
      // S3 server access logging delivers only to SSE-S3 buckets.
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      versioned: true,
      lifecycleRules: [{ expiration: Duration.days(365), noncurrentVersionExpiration: Duration.days(30) }],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const auditBucket = new s3.Bucket(this, 'AuditBucket', {
      objectLockEnabled: true,
      objectLockDefaultRetention: s3.ObjectLockRetention.compliance(Duration.days(env.auditRetentionDays)),
      versioned: true,
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: dataKey,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      serverAccessLogsBucket: accessLogs,
      serverAccessLogsPrefix: 'audit/',
      // No expiration: Object Lock keeps every version for the retention period anyway.
      lifecycleRules: [{
        transitions: [{ storageClass: s3.StorageClass.GLACIER, transitionAfter: Duration.days(env.auditGlacierAfterDays) }],
      }],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const payloadBucket = new s3.Bucket(this, 'PayloadBucket', {
      encryption: s3.BucketEncryption.KMS,
      encryptionKey: dataKey,
      bucketKeyEnabled: true,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      serverAccessLogsBucket: accessLogs,
      serverAccessLogsPrefix: 'payloads/',
      lifecycleRules: [{ expiration: Duration.days(env.payloadExpiryDays), abortIncompleteMultipartUploadAfter: Duration.days(1) }],
      removalPolicy: removal,
    });

    // ---- queues (every async path has a dead-letter queue with an alarm)
    const alarms: cw.Alarm[] = [];
    const queueWithDlq = (id: string, name: string, visibility: Duration, maxReceiveCount: number) => {
      const dlq = new sqs.Queue(this, `${id}Dlq`, {
        queueName: `${name}-dlq`,
        encryption: sqs.QueueEncryption.KMS,
        encryptionMasterKey: dataKey,
        enforceSSL: true,
        retentionPeriod: Duration.days(14),
      });
      const queue = new sqs.Queue(this, id, {
        queueName: name,
        encryption: sqs.QueueEncryption.KMS,
        encryptionMasterKey: dataKey,
        enforceSSL: true,
        visibilityTimeout: visibility,
        deadLetterQueue: { queue: dlq, maxReceiveCount },
      });
      alarms.push(new cw.Alarm(this, `${id}DlqAlarm`, {
        alarmDescription: `${name}: messages in the dead-letter queue`,
        metric: dlq.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5) }),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cw.TreatMissingData.NOT_BREACHING,
      }));
      return queue;
    };
    // Lambda's advice: visibility at least six times the consumer's timeout.
    const auditQueue = queueWithDlq('AuditQueue', `${prefix}-audit`, Duration.seconds(6 * fns.auditWriterTimeoutSecs), 5);
    // Lambda refuses an SQS event source whose queue's visibility timeout is below the function's
    // timeout; the dispatcher runs as long as a route (a stream), so the queues get at least that.
    const dispatchVisibilitySecs = Math.max(fns.dispatchVisibilitySecs, fns.routeTimeoutSecs);
    const queued = PROVIDERS.filter((p) => config.providers[p].transport === 'queue');
    const requestQueues = new Map<ProviderName, sqs.Queue>();
    for (const p of queued) {
      requestQueues.set(p, queueWithDlq(
        `RequestQueue${pascal(p)}`, `${prefix}-requests-${p}`,
        Duration.seconds(dispatchVisibilitySecs), fns.dispatchMaxReceives,
      ));
    }
    const replyQueueArn = `arn:${Aws.PARTITION}:sqs:${Aws.REGION}:${Aws.ACCOUNT_ID}:${REPLY_QUEUE_PREFIX}*`;

    // s3:PutObject only (grantPut would add PutObjectRetention/LegalHold, which no gateway role may have),
    // with the bucket key's GenerateDataKey for SSE-KMS.
    const putObjects = (bucket: s3.Bucket, fn: lambda.Function, pattern: string) => {
      fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [bucket.arnForObjects(pattern)] }));
      dataKey.grant(fn, 'kms:GenerateDataKey');
    };

    // ---- provider secrets (values set out of band, never in the template)
    const secrets = new Map<ProviderName, sm.Secret>();
    for (const p of PROVIDERS.filter((x) => x !== 'bedrock-claude')) {
      secrets.set(p, new sm.Secret(this, `${pascal(p)}KeySecret`, {
        description: `${prefix}: ${p} API key (set with put-secret-value after deploy)`,
        encryptionKey: dataKey,
        removalPolicy: removal,
      }));
      NagSuppressions.addResourceSuppressions(secrets.get(p)!, [{
        id: 'AwsSolutions-SMG4',
        reason: 'the secret holds a provider API key issued by Azure or Google; it is rotated at the provider and stored with put-secret-value (README deploy section); a rotation function would need provider admin credentials in this account',
      }]);
    }

    // ---- identity: the Cognito user pool the authorizer checks tokens against
    const policy = JSON.parse(readFileSync(SCOPE_POLICY_FILE, 'utf8')) as {
      scopes: Record<string, string[]>;
      token_scope_prefix: string;
      groups: Record<string, string[]>;
      department_group_prefix: string;
    };
    const userPool = new cognito.UserPool(this, 'UserPool', {
      userPoolName: prefix,
      selfSignUpEnabled: false,
      signInAliases: { email: true, username: true },
      autoVerify: { email: true },
      accountRecovery: cognito.AccountRecovery.EMAIL_ONLY,
      passwordPolicy: {
        minLength: 8, requireLowercase: true, requireUppercase: true, requireDigits: true, requireSymbols: true,
        tempPasswordValidity: Duration.days(3),
      },
      mfa: cognito.Mfa.REQUIRED,
      mfaSecondFactor: { otp: true, sms: false, email: false },
      customAttributes: Object.fromEntries(['user_id', 'department', 'job_title', 'start_date', 'end_date']
        .map((a) => [a, new cognito.StringAttribute({ mutable: true, maxLen: 256 })])),
      featurePlan: cognito.FeaturePlan.PLUS,
      standardThreatProtectionMode: cognito.StandardThreatProtectionMode.FULL_FUNCTION,
      deletionProtection: envName === 'prod',
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const groupNames = [
      ...Object.keys(policy.groups),
      ...Object.keys(config.departments).map((d) => `${policy.department_group_prefix}${d}`),
    ];
    for (const g of groupNames) {
      new cognito.CfnUserPoolGroup(this, `Group${pascal(g)}`, { userPoolId: userPool.userPoolId, groupName: g });
    }
    const scopeNames = [...new Set(Object.entries(policy.scopes).flatMap(([k, v]) => [k, ...v]))];
    const resourceServerId = policy.token_scope_prefix.replace(/\/$/, '');
    const gatewayScopes = scopeNames.map((n) => new cognito.ResourceServerScope({ scopeName: n, scopeDescription: `gateway scope ${n}` }));
    const resourceServer = userPool.addResourceServer('ResourceServer', {
      identifier: resourceServerId,
      scopes: gatewayScopes,
    });
    const appClient = userPool.addClient('AppClient', {
      userPoolClientName: `${prefix}-public`,
      generateSecret: false,
      authFlows: { userSrp: true },
      oAuth: {
        flows: { authorizationCodeGrant: true },
        callbackUrls: env.callbackUrls,
        scopes: [
          cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE,
          ...gatewayScopes.map((sc) => cognito.OAuthScope.resourceServer(resourceServer, sc)),
        ],
      },
      accessTokenValidity: Duration.minutes(15),
      idTokenValidity: Duration.minutes(15),
      refreshTokenValidity: Duration.hours(12),
      refreshTokenRotationGracePeriod: Duration.seconds(10),
      enableTokenRevocation: true,
      preventUserExistenceErrors: true,
    });

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
    }) => {
      const logGroup = new logs.LogGroup(this, `${pascal(name)}Logs`, {
        retention: logs.RetentionDays.ONE_YEAR,
        encryptionKey: dataKey,
        removalPolicy: removal,
      });
      // A role of its own, without the managed basic-execution policy: it writes to its own log group only.
      const role = new iam.Role(this, `${pascal(name)}Role`, {
        assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
        description: `${prefix} ${name} function`,
      });
      logGroup.grantWrite(role);
      const fn = new lambda.Function(this, pascal(name), {
        description: opts.description,
        runtime: lambda.Runtime.PROVIDED_AL2023,
        architecture: lambda.Architecture.ARM_64,
        handler: 'bootstrap',
        code: lambda.Code.fromAsset(this.assetDir(name, props.assets)),
        role,
        logGroup,
        timeout: opts.timeout,
        memorySize: opts.memoryMb,
        reservedConcurrentExecutions: opts.reserved ?? undefined,
        environment: { ...common, ...opts.environment },
        environmentEncryption: dataKey,
        tracing: env.tracing ? lambda.Tracing.ACTIVE : lambda.Tracing.DISABLED,
      });
      if (env.tracing) {
        NagSuppressions.addResourceSuppressions(role, [{
          id: 'AwsSolutions-IAM5',
          reason: 'X-Ray PutTraceSegments/PutTelemetryRecords support no resource-level permissions (Resource *), added by the Lambda construct when tracing is on',
          appliesTo: ['Resource::*'],
        }], true);
      }
      this.functions.set(name, fn);
      return fn;
    };

    const auditBodiesEnv: Record<string, string> = fns.auditBodies
      ? {
          GATEWAY_AUDIT_BODIES: 'on',
          GATEWAY_AUDIT_BODY_MAX_BYTES: String(fns.auditBodyMaxBytes),
          GATEWAY_AUDIT_BUCKET: auditBucket.bucketName,
          GATEWAY_AUDIT_BODY_KEY_ID: auditBodiesKey.keyArn,
        }
      : { GATEWAY_AUDIT_BODIES: 'off' };

    const authorizer = make('authorizer', {
      description: `${prefix}: REQUEST authorizer (Cognito tokens, scopes)`,
      timeout: Duration.seconds(10),
      memoryMb: 256,
      environment: {
        COGNITO_USER_POOL_ID: userPool.userPoolId,
        COGNITO_APP_CLIENT_IDS: appClient.userPoolClientId,
        GATEWAY_AUDIT_QUEUE_URL: auditQueue.queueUrl,
      },
    });
    auditQueue.grantSendMessages(authorizer);

    for (const p of PROVIDERS) {
      const transport = config.providers[p].transport;
      const environment: Record<string, string> = {
        GATEWAY_TRANSPORT: transport,
        GATEWAY_AUDIT_QUEUE_URL: auditQueue.queueUrl,
        ...auditBodiesEnv,
      };
      if (transport === 'direct') {
        Object.assign(environment, upstreamTimeouts, upstreamEnv(p));
      } else {
        Object.assign(environment, {
          GATEWAY_REQUEST_QUEUE_URL: requestQueues.get(p)!.queueUrl,
          GATEWAY_REPLY_QUEUE_PREFIX: REPLY_QUEUE_PREFIX,
          GATEWAY_PAYLOAD_BUCKET: payloadBucket.bucketName,
        });
      }
      const fn = make(p, {
        description: `${prefix}: ${p} route (${transport})`,
        timeout: Duration.seconds(fns.routeTimeoutSecs),
        memoryMb: fns.routeMemoryMb,
        reserved: fns.routeReservedConcurrency,
        environment,
      });
      auditQueue.grantSendMessages(fn);
      if (fns.auditBodies) {
        putObjects(auditBucket, fn, `${BODIES_PREFIX}*`);
        // Only data keys bound to the bodies' encryption context (shared/src/audit/bodies.rs).
        fn.addToRolePolicy(new iam.PolicyStatement({
          actions: ['kms:GenerateDataKey'],
          resources: [auditBodiesKey.keyArn],
          conditions: { StringEquals: { 'kms:EncryptionContext:purpose': 'llm-gateway-audit-bodies' } },
        }));
      }
      if (transport === 'direct') {
        grantUpstream(p, fn);
      } else {
        requestQueues.get(p)!.grantSendMessages(fn);
        putObjects(payloadBucket, fn, '*');
        payloadBucket.grantRead(fn);
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
        GATEWAY_DISPATCH_QUEUE_URLS: queued.map((p) => `${p}=${requestQueues.get(p)!.queueUrl}`).join(','),
        GATEWAY_REPLY_QUEUE_PREFIX: REPLY_QUEUE_PREFIX,
        GATEWAY_PAYLOAD_BUCKET: payloadBucket.bucketName,
        GATEWAY_DISPATCH_VISIBILITY_SECS: String(dispatchVisibilitySecs),
        GATEWAY_DISPATCH_MAX_RECEIVES: String(fns.dispatchMaxReceives),
        GATEWAY_AUDIT_QUEUE_URL: auditQueue.queueUrl,
        ...upstreamTimeouts,
      };
      for (const p of queued) Object.assign(environment, upstreamEnv(p));
      const dispatcher = make('dispatcher', {
        description: `${prefix}: queue transport, relays queued requests to ${queued.join(', ')}`,
        timeout: Duration.seconds(fns.routeTimeoutSecs),
        memoryMb: fns.routeMemoryMb,
        reserved: fns.dispatcherReservedConcurrency,
        environment,
      });
      for (const p of queued) {
        // The dispatcher keeps the visibility up while a stream runs (ChangeMessageVisibility: in consume).
        dispatcher.addEventSource(new sources.SqsEventSource(requestQueues.get(p)!, {
          batchSize: 1,
          reportBatchItemFailures: true,
        }));
        grantUpstream(p, dispatcher);
      }
      putObjects(payloadBucket, dispatcher, '*');
      payloadBucket.grantRead(dispatcher);
      auditQueue.grantSendMessages(dispatcher);
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
        GATEWAY_AUDIT_BUCKET: auditBucket.bucketName,
        GATEWAY_AUDIT_PREFIX: AUDIT_PREFIX,
      },
    });
    writer.addEventSource(new sources.SqsEventSource(auditQueue, {
      batchSize: 100,
      maxBatchingWindow: Duration.seconds(5),
      reportBatchItemFailures: true,
    }));
    putObjects(auditBucket, writer, `${AUDIT_PREFIX}*`);

    const digest = make('audit-digest', {
      description: `${prefix}: hourly signed digest of the audit trail`,
      timeout: Duration.minutes(15),
      memoryMb: 1024,
      reserved: 1,
      environment: {
        GATEWAY_AUDIT_BUCKET: auditBucket.bucketName,
        GATEWAY_AUDIT_DIGEST_KEY_ID: auditDigestKey.keyArn,
        GATEWAY_AUDIT_PREFIX: AUDIT_PREFIX,
        GATEWAY_AUDIT_DIGEST_PREFIX: DIGEST_PREFIX,
        GATEWAY_AUDIT_DIGEST_GRACE_SECS: String(fns.auditDigestGraceSecs),
        GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS: String(fns.routeTimeoutSecs),
        GATEWAY_AUDIT_DIGEST_MAX_HOURS: String(fns.auditDigestMaxHours),
      },
    });
    digest.addToRolePolicy(new iam.PolicyStatement({
      actions: ['s3:ListBucket', 's3:ListBucketVersions'],
      resources: [auditBucket.bucketArn],
    }));
    auditBucket.grantRead(digest, `${AUDIT_PREFIX}*`);
    auditBucket.grantRead(digest, `${DIGEST_PREFIX}*`);
    putObjects(auditBucket, digest, `${AUDIT_PREFIX}*`);
    putObjects(auditBucket, digest, `${DIGEST_PREFIX}*`);
    auditDigestKey.grant(digest, 'kms:Sign');

    new events.Rule(this, 'AuditDigestSchedule', {
      description: `${prefix}: audit digest, hourly, a minute after the grace period`,
      schedule: events.Schedule.cron({ minute: String(Math.ceil(fns.auditDigestGraceSecs / 60) + 1) }),
      targets: [new targets.LambdaFunction(digest, { retryAttempts: 2, maxEventAge: Duration.hours(1) })],
    });
    alarms.push(new cw.Alarm(this, 'AuditDigestErrors', {
      alarmDescription: `${prefix}: the audit digest job failed (KMS or S3 failure, or a deleted digest)`,
      metric: digest.metricErrors({ period: Duration.hours(1) }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cw.TreatMissingData.NOT_BREACHING,
    }));

    // The grant methods' S3/KMS action groups and object ARNs under a bucket: the wildcards cdk-nag
    // reports that are not resource wildcards. A `Resource::*` is never suppressed here.
    for (const fn of this.functions.values()) {
      NagSuppressions.addResourceSuppressions(fn.role!, [{
        id: 'AwsSolutions-IAM5',
        reason: 'object-level S3 grants (grantRead, s3:PutObject) name one bucket and, for the audit bucket, one prefix (audit/*, bodies/*, digests/*); object keys are made per request or per hour at run time. The action groups (s3:GetObject*, s3:GetBucket*, s3:List*, kms:GenerateDataKey*, kms:ReEncrypt*) are those of the CDK grant methods on that bucket and its key only',
        appliesTo: [
          { regex: '/^Action::(s3:(GetObject|GetBucket|List)\\*|kms:(GenerateDataKey|ReEncrypt)\\*)$/' },
          { regex: '/^Resource::<(AuditBucket|PayloadBucket)[A-F0-9]{8}\\.Arn>\\/.*\\*$/' },
        ],
      }], true);
    }

    // The auditors (gateway-audit verify / bodies): read the trail, verify digests, open sealed bodies.
    // Assumable by principals of this account whose own IAM policy allows sts:AssumeRole on it.
    const auditors = new iam.Role(this, 'AuditorRole', {
      assumedBy: new iam.AccountRootPrincipal(),
      description: `${prefix}: auditors (gateway-audit verify, gateway-audit bodies)`,
      maxSessionDuration: Duration.hours(1),
    });
    auditBucket.grantRead(auditors);
    auditors.addToPolicy(new iam.PolicyStatement({ actions: ['s3:ListBucketVersions'], resources: [auditBucket.bucketArn] }));
    auditDigestKey.grant(auditors, 'kms:Verify', 'kms:GetPublicKey', 'kms:DescribeKey');
    auditors.addToPolicy(new iam.PolicyStatement({
      actions: ['kms:Decrypt'],
      resources: [auditBodiesKey.keyArn],
      conditions: { StringEquals: { 'kms:EncryptionContext:purpose': 'llm-gateway-audit-bodies' } },
    }));
    NagSuppressions.addResourceSuppressions(auditors, [{
      id: 'AwsSolutions-IAM5',
      reason: 'auditors read every object of the audit bucket (grantRead: s3:GetObject*, s3:GetBucket*, s3:List* on the bucket and its objects, kms:Decrypt on its key); read only, no write or delete',
      appliesTo: [
        { regex: '/^Action::(s3:(GetObject|GetBucket|List)\\*)$/' },
        { regex: '/^Resource::<AuditBucket[A-F0-9]{8}\\.Arn>\\/\\*$/' },
      ],
    }], true);
    new CfnOutput(this, 'AuditorRoleArn', { value: auditors.roleArn });

    new CfnOutput(this, 'AuditBucketName', { value: auditBucket.bucketName });
    new CfnOutput(this, 'AuditDigestKeyArn', { value: auditDigestKey.keyArn });
    new CfnOutput(this, 'AuditBodiesKeyArn', { value: auditBodiesKey.keyArn });
    new CfnOutput(this, 'AuditQueueUrl', { value: auditQueue.queueUrl });
  }

  private assetDir(name: FunctionName, mode: AssetMode): string {
    const dir = path.join(lambdaOutputDir(), name);
    const built = existsSync(path.join(dir, 'bootstrap'));
    if (mode === 'real' && !built) {
      throw new Error(`${name}: no ${path.join(dir, 'bootstrap')}; run cargo lambda build --release --arm64 first (README.md)`);
    }
    if (mode === 'placeholder' || !built) {
      Annotations.of(this).addWarningV2(`gateway:placeholder-${name}`,
        `${name}: placeholder code (test mode); deploy with -c assets=real after cargo lambda build`);
      return PLACEHOLDER_ASSET;
    }
    return dir;
  }
}

function pascal(s: string): string {
  return s.split('-').map((w) => w[0].toUpperCase() + w.slice(1)).join('');
}
