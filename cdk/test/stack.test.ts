import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { loadConfig, parseConfig } from '../lib/config';
import { FUNCTIONS } from '../lib/gateway-stack';
import { dispatcherMaxConcurrency } from '../lib/functions';
import { build, envOf, list, resourcesOf, statementsOf } from './helpers';

const config = loadConfig();
const { stack, template } = build();

describe('keys', () => {
  test('the symmetric keys rotate; the digest key is RSA-3072 for signing and retained', () => {
    const all = Object.entries(resourcesOf(template, 'AWS::KMS::Key'));
    // The gateway's own three; lib/operations.ts adds the alarm topic's and the query results' (test/operations.test.ts).
    const keys = all.filter(([id]) => /^(DataKey|AuditBodiesKey|AuditDigestKey)/.test(id)).map(([, k]) => k);
    assert.equal(keys.length, 3);
    for (const [id, k] of all.filter(([, k]) => k.Properties.KeySpec === undefined)) assert.equal(k.Properties.EnableKeyRotation, true, id);
    const digest = keys.filter((k) => k.Properties.KeySpec === 'RSA_3072');
    assert.equal(digest.length, 1);
    assert.equal(digest[0].Properties.KeyUsage, 'SIGN_VERIFY');
    assert.equal(digest[0].DeletionPolicy, 'Retain');
    for (const k of keys.filter((k) => k.Properties.KeySpec === undefined)) {
      assert.equal(k.Properties.EnableKeyRotation, true);
    }
  });
});

describe('buckets', () => {
  const buckets = resourcesOf(template, 'AWS::S3::Bucket');
  const audit = Object.entries(buckets).find(([id]) => id.startsWith('AuditBucket'))![1];
  const payload = Object.entries(buckets).find(([id]) => id.startsWith('PayloadBucket'))![1];

  test('every bucket blocks public access, is encrypted and TLS-only', () => {
    // audit, payloads, access logs, provisioning, reports, and the Athena query results (lib/operations.ts)
    assert.equal(Object.keys(buckets).length, 6);
    const policies = Object.values(resourcesOf(template, 'AWS::S3::BucketPolicy'));
    for (const [id, b] of Object.entries(buckets)) {
      assert.deepEqual(b.Properties.PublicAccessBlockConfiguration, {
        BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true,
      }, id);
      assert.ok(b.Properties.BucketEncryption.ServerSideEncryptionConfiguration.length > 0, id);
      assert.equal(b.Properties.AccessControl, undefined, `${id}: no ACLs (log delivery by bucket policy)`);
      const policy = policies.find((p) => p.Properties.Bucket.Ref === id);
      assert.ok(policy, `${id} has a bucket policy`);
      assert.ok(policy.Properties.PolicyDocument.Statement.some((s: any) =>
        s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'), `${id} denies plain HTTP`);
    }
  });

  test('the audit bucket: Object Lock COMPLIANCE, versioned, SSE-KMS, Glacier, never expires, retained', () => {
    const p = audit.Properties;
    assert.equal(p.ObjectLockEnabled, true);
    assert.deepEqual(p.ObjectLockConfiguration, {
      ObjectLockEnabled: 'Enabled',
      Rule: { DefaultRetention: { Mode: 'COMPLIANCE', Days: config.environments.dev.auditRetentionDays } },
    });
    assert.equal(p.VersioningConfiguration.Status, 'Enabled');
    assert.equal(p.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, 'aws:kms');
    const rules = p.LifecycleConfiguration.Rules;
    assert.ok(rules.some((r: any) => r.Transitions?.some((t: any) => t.StorageClass === 'GLACIER')));
    assert.ok(rules.every((r: any) => r.ExpirationInDays === undefined && r.NoncurrentVersionExpiration === undefined));
    assert.equal(audit.DeletionPolicy, 'Retain');
    assert.ok(p.LoggingConfiguration.DestinationBucketName);
  });

  test('prod keeps its audit records for the configured years', () => {
    const prod = build({ envName: 'prod' }).template;
    const b = Object.entries(resourcesOf(prod, 'AWS::S3::Bucket')).find(([id]) => id.startsWith('AuditBucket'))![1];
    assert.equal(b.Properties.ObjectLockConfiguration.Rule.DefaultRetention.Days, config.environments.prod.auditRetentionDays);
  });

  test('payloads expire after the configured days', () => {
    assert.ok(payload.Properties.LifecycleConfiguration.Rules.some(
      (r: any) => r.ExpirationInDays === config.environments.dev.payloadExpiryDays));
    assert.ok(payload.Properties.LoggingConfiguration.DestinationBucketName);
  });
});

describe('queues', () => {
  const queues = resourcesOf(template, 'AWS::SQS::Queue');
  test('every queue is KMS-encrypted and TLS-only', () => {
    for (const [id, q] of Object.entries(queues)) assert.ok(q.Properties.KmsMasterKeyId, id);
    const policies = Object.values(resourcesOf(template, 'AWS::SQS::QueuePolicy'));
    assert.equal(policies.length, Object.keys(queues).length);
  });
  test('the audit queue and each queue-transport provider\'s request queue have a DLQ with an alarm', () => {
    const main = Object.values(queues).filter((q) => q.Properties.RedrivePolicy);
    const names = main.map((q) => q.Properties.QueueName).sort();
    const queued = Object.entries(config.providers).filter(([, p]) => p.transport === 'queue').map(([n]) => n);
    assert.deepEqual(names, ['llm-gateway-dev-audit', ...queued.map((p) => `llm-gateway-dev-requests-${p}`)].sort());
    const dlqs = Object.values(queues).filter((q) => !q.Properties.RedrivePolicy);
    assert.equal(dlqs.length, main.length);
    const dlqIds = Object.keys(queues).filter((id) => !queues[id].Properties.RedrivePolicy);
    const alarms = Object.values(resourcesOf(template, 'AWS::CloudWatch::Alarm'))
      .filter((a) => a.Properties.MetricName === 'ApproximateNumberOfMessagesVisible'
        && dlqIds.includes(a.Properties.Dimensions?.[0]?.Value?.['Fn::GetAtt']?.[0]));
    assert.equal(alarms.length, dlqs.length);
  });
  test('request queues outlast the dispatcher timeout (Lambda refuses the event source otherwise)', () => {
    for (const q of Object.values(queues).filter((q) => q.Properties.RedrivePolicy && /-requests-/.test(q.Properties.QueueName))) {
      assert.ok(q.Properties.VisibilityTimeout >= config.functions.routeTimeoutSecs);
      assert.equal(q.Properties.RedrivePolicy.maxReceiveCount, config.functions.dispatchMaxReceives);
    }
  });
});

describe('functions', () => {
  const fns = resourcesOf(template, 'AWS::Lambda::Function');
  test('ten functions on provided.al2023/arm64 with encrypted environments', () => {
    assert.equal(Object.keys(fns).length, FUNCTIONS.length);
    for (const [id, f] of Object.entries(fns)) {
      assert.equal(f.Properties.Runtime, 'provided.al2023', id);
      assert.deepEqual(f.Properties.Architectures, ['arm64'], id);
      assert.equal(f.Properties.Handler, 'bootstrap', id);
      assert.ok(f.Properties.KmsKeyArn, `${id} environment encryption`);
      assert.ok(f.Properties.LoggingConfig.LogGroup, `${id} own log group`);
    }
  });
  test('log groups keep 365 days, KMS-encrypted', () => {
    const groups = Object.values(resourcesOf(template, 'AWS::Logs::LogGroup'));
    // One per function, the VPC flow logs, the API access logs and the WAF logs.
    assert.equal(groups.length, FUNCTIONS.length + 3);
    for (const g of groups) {
      assert.equal(g.Properties.RetentionInDays, 365);
      assert.ok(g.Properties.KmsKeyId);
    }
  });
  test('routes carry their transport\'s settings', () => {
    for (const [p, id] of [['azure-openai', 'AzureOpenai'], ['bedrock-claude', 'BedrockClaude'], ['gemini', 'Gemini']] as const) {
      const env = envOf(template, id);
      const transport = config.providers[p].transport;
      assert.equal(env.GATEWAY_TRANSPORT, transport);
      for (const k of ['GATEWAY_AUDIT_QUEUE_URL', 'GATEWAY_AUDIT_BUCKET', 'GATEWAY_AUDIT_BODY_KEY_ID', 'RUST_LOG']) {
        assert.ok(env[k], `${p}: ${k}`);
      }
      if (transport === 'queue') {
        for (const k of ['GATEWAY_REQUEST_QUEUE_URL', 'GATEWAY_REPLY_QUEUE_PREFIX', 'GATEWAY_PAYLOAD_BUCKET']) assert.ok(env[k], `${p}: ${k}`);
      } else {
        assert.ok(env.GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS, `${p}: upstream timeout`);
      }
    }
    assert.ok(envOf(template, 'AzureOpenai').GATEWAY_AZURE_OPENAI_KEY_SECRET_ID === undefined
      || config.providers['azure-openai'].transport === 'direct');
  });
  test('dispatcher, audit writer and digest job carry theirs', () => {
    const d = envOf(template, 'Dispatcher');
    assert.match(JSON.stringify(d.GATEWAY_DISPATCH_QUEUE_URLS), /azure-openai=.*gemini=/);
    for (const k of ['GATEWAY_REPLY_QUEUE_PREFIX', 'GATEWAY_PAYLOAD_BUCKET', 'GATEWAY_AUDIT_QUEUE_URL',
      'GATEWAY_AZURE_OPENAI_KEY_SECRET_ID', 'GATEWAY_GEMINI_KEY_SECRET_ID', 'GATEWAY_AZURE_OPENAI_ENDPOINT',
      'GATEWAY_DISPATCH_VISIBILITY_SECS', 'GATEWAY_DISPATCH_MAX_RECEIVES']) assert.ok(d[k], `dispatcher: ${k}`);
    const w = envOf(template, 'AuditWriter');
    assert.ok(w.GATEWAY_AUDIT_BUCKET);
    assert.equal(w.GATEWAY_AUDIT_PREFIX, 'audit/');
    const g = envOf(template, 'AuditDigest');
    for (const k of ['GATEWAY_AUDIT_BUCKET', 'GATEWAY_AUDIT_DIGEST_KEY_ID', 'GATEWAY_AUDIT_DIGEST_PREFIX',
      'GATEWAY_AUDIT_DIGEST_GRACE_SECS', 'GATEWAY_AUDIT_FUNCTION_TIMEOUT_SECS']) assert.ok(g[k], `digest: ${k}`);
    const digestFn = Object.entries(fns).find(([id]) => id.startsWith('AuditDigest'))![1];
    assert.equal(digestFn.Properties.ReservedConcurrentExecutions, 1);
    assert.equal(digestFn.Properties.Timeout, 900);
    const schedulerFn = Object.entries(fns).find(([id]) => id.startsWith('Scheduler'))![1];
    assert.equal(schedulerFn.Properties.ReservedConcurrentExecutions, 2, 'alerts beside a running rollup');
    assert.equal(schedulerFn.Properties.Timeout, 900, 'a month of the trail');
    const authorizer = envOf(template, 'Authorizer');
    assert.ok(authorizer.GATEWAY_AUDIT_QUEUE_URL);
  });
  test('SQS event sources report batch item failures', () => {
    const mappings = Object.values(resourcesOf(template, 'AWS::Lambda::EventSourceMapping'));
    assert.equal(mappings.length, 3); // audit queue + two queue-transport providers
    for (const m of mappings) assert.deepEqual(m.Properties.FunctionResponseTypes, ['ReportBatchItemFailures']);
  });
  test('the digest job runs hourly, a minute after the grace period, with retries', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'cron(11 * * * ? *)',
      Targets: [Match.objectLike({ RetryPolicy: { MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 3600 } })],
    });
  });
});

describe('identity', () => {
  test('the user pool: strong passwords, TOTP MFA required, e-mail verification, custom attributes', () => {
    template.hasResourceProperties('AWS::Cognito::UserPool', {
      Policies: { PasswordPolicy: Match.objectLike({
        MinimumLength: 8, RequireLowercase: true, RequireUppercase: true, RequireNumbers: true, RequireSymbols: true,
      }) },
      MfaConfiguration: 'ON',
      EnabledMfas: ['SOFTWARE_TOKEN_MFA'],
      AutoVerifiedAttributes: ['email'],
      AdminCreateUserConfig: { AllowAdminCreateUserOnly: true },
      UserPoolTier: 'PLUS',
      Schema: ['user_id', 'department', 'job_title', 'phone', 'start_date', 'end_date', 'status', 'alias_id'].map((n) => Match.objectLike({ Name: n })),
    });
  });
  test('the custom attribute alias_id: a mutable string of at most 64 characters', () => {
    const pool = Object.values(resourcesOf(template, 'AWS::Cognito::UserPool'))[0];
    const alias = pool.Properties.Schema.filter((a: any) => a.Name === 'alias_id');
    assert.deepEqual(alias, [{ Name: 'alias_id', AttributeDataType: 'String', Mutable: true, StringAttributeConstraints: { MaxLength: '64' } }]);
  });
  test('groups: the scope policy\'s and one per configured department', () => {
    const policy = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'policy', 'scopes.json'), 'utf8'));
    const names = Object.values(resourcesOf(template, 'AWS::Cognito::UserPoolGroup')).map((g) => g.Properties.GroupName).sort();
    assert.deepEqual(names, [...Object.keys(policy.groups), ...Object.keys(config.departments).map((d) => `dept-${d}`)].sort());
  });
  test('the public app client: code grant, callback allow-list, 15 min tokens, 12 h refresh with rotation, revocation', () => {
    template.hasResourceProperties('AWS::Cognito::UserPoolClient', {
      GenerateSecret: false,
      AllowedOAuthFlows: ['code'],
      CallbackURLs: config.environments.dev.callbackUrls,
      AccessTokenValidity: 15, IdTokenValidity: 15, RefreshTokenValidity: 720,
      TokenValidityUnits: { AccessToken: 'minutes', IdToken: 'minutes', RefreshToken: 'minutes' },
      EnableTokenRevocation: true,
      RefreshTokenRotation: Match.objectLike({ Feature: 'ENABLED' }),
    });
    const client = Object.values(resourcesOf(template, 'AWS::Cognito::UserPoolClient'))[0];
    const scopes = JSON.stringify(client.Properties.AllowedOAuthScopes);
    for (const sc of ['"openid"', '"/text:openai"', '"/audio:stt"', '"/all"']) assert.ok(scopes.includes(sc), `${sc} in ${scopes}`);
    template.hasResourceProperties('AWS::Cognito::UserPoolResourceServer', { Identifier: 'gateway' });
    const env = envOf(template, 'Authorizer');
    assert.ok(env.COGNITO_USER_POOL_ID && env.COGNITO_APP_CLIENT_IDS);
  });
});

describe('request queues\' event sources', () => {
  test('each takes an equal share of the dispatcher\'s reserved concurrency', () => {
    const mappings = Object.values(resourcesOf(template, 'AWS::Lambda::EventSourceMapping'))
      .filter((m) => m.Properties.BatchSize === 1);
    const queued = Object.values(config.providers).filter((p) => p.transport === 'queue').length;
    assert.equal(mappings.length, queued);
    for (const m of mappings) {
      assert.deepEqual(m.Properties.ScalingConfig, {
        MaximumConcurrency: Math.floor(config.functions.dispatcherReservedConcurrency! / queued),
      });
    }
    assert.equal(dispatcherMaxConcurrency(null, 2), undefined);
    assert.equal(dispatcherMaxConcurrency(3, 2), 2, 'Lambda\'s minimum');
    assert.equal(dispatcherMaxConcurrency(5000, 1), 1000, 'Lambda\'s maximum');
  });
});

describe('scheduler', () => {
  test('an hourly rule sends the reply-queue sweep job; the scheduler deletes only reply queues', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 hour)',
      Targets: [Match.objectLike({ Input: JSON.stringify({ job: 'sweep-reply-queues' }), RetryPolicy: Match.anyValue() })],
    });
    const deletes = statementsOf(template, 'Scheduler').filter((s) => list<string>(s.Action).includes('sqs:DeleteQueue'));
    assert.equal(deletes.length, 1);
    assert.ok(JSON.stringify(deletes[0].Resource).includes(':llm-gateway-reply-*'), JSON.stringify(deletes[0].Resource));
    assert.equal(envOf(template, 'Scheduler').GATEWAY_REPLY_QUEUE_PREFIX, 'llm-gateway-reply-');
  });
});

describe('provisioner', () => {
  test('new objects under incoming/ and dry-run/ of the provisioning bucket run it, through EventBridge', () => {
    const buckets = resourcesOf(template, 'AWS::S3::Bucket');
    const [bucketId, bucket] = Object.entries(buckets).find(([id]) => id.startsWith('ProvisioningBucket'))!;
    assert.deepEqual(bucket.Properties.NotificationConfiguration, { EventBridgeConfiguration: { EventBridgeEnabled: true } });
    assert.equal(bucket.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, 'aws:kms');
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.s3'],
        'detail-type': ['Object Created'],
        detail: { bucket: { name: [{ Ref: bucketId }] }, object: { key: [{ prefix: 'incoming/' }, { prefix: 'dry-run/' }] } },
      },
    });
    assert.deepEqual(Object.keys(resourcesOf(template, 'Custom::S3BucketNotifications')), [], 'no notifications custom resource');
  });
  test('it reads only the files, writes only reports, and changes users of its own pool only', () => {
    const statements = statementsOf(template, 'Provisioner');
    const cognito = statements.filter((s) => list<string>(s.Action).some((a) => a.startsWith('cognito-idp:')));
    assert.equal(cognito.length, 1);
    assert.deepEqual(cognito[0].Resource, { 'Fn::GetAtt': [Object.keys(resourcesOf(template, 'AWS::Cognito::UserPool'))[0], 'Arn'] });
    // It never deletes users or groups (the admin API deletes, on an administrator's request).
    assert.ok(!list<string>(cognito[0].Action).some((a) => /Delete(User|Group)$|\*/.test(a)), JSON.stringify(cognito[0].Action));
    const puts = statements.filter((s) => list<string>(s.Action).includes('s3:PutObject'));
    assert.equal(puts.length, 1);
    assert.match(JSON.stringify(puts[0].Resource), /ReportsBucket.*\/reports\/provisioning\/\*/);
    const env = envOf(template, 'Provisioner');
    const departments = JSON.parse(env.GATEWAY_DEPARTMENTS as string);
    assert.deepEqual(departments, Object.fromEntries(Object.entries(config.departments).map(([id, d]) => [id, d.names])));
    assert.equal(env.GATEWAY_DEPARTMENT_GROUP_PREFIX, 'dept-');
  });
});

describe('sign-in and mail', () => {
  test('a hosted sign-in domain with managed login and a style for the app client', () => {
    const domains = Object.values(resourcesOf(template, 'AWS::Cognito::UserPoolDomain'));
    assert.equal(domains.length, 1);
    assert.equal(domains[0].Properties.ManagedLoginVersion, 2);
    // No configured prefix: <project>-<env>-<account>, unique per account and region.
    assert.deepEqual(domains[0].Properties.Domain, { 'Fn::Join': ['', ['llm-gateway-dev-', { Ref: 'AWS::AccountId' }]] });
    template.hasResourceProperties('AWS::Cognito::ManagedLoginBranding', { UseCognitoProvidedValues: true });
    template.hasResourceProperties('AWS::Cognito::UserPoolClient', { LogoutURLs: config.environments.dev.identity.logoutUrls });
  });
  test('dev sends Cognito\'s own mail; an environment with an SES identity sends through it', () => {
    const devPool = Object.values(resourcesOf(template, 'AWS::Cognito::UserPool'))[0];
    assert.equal(devPool.Properties.EmailConfiguration.EmailSendingAccount, 'COGNITO_DEFAULT');
    const staging = build({ envName: 'staging' }).template;
    const pool = Object.values(resourcesOf(staging, 'AWS::Cognito::UserPool'))[0];
    const ident = config.environments.staging.identity;
    assert.equal(pool.Properties.EmailConfiguration.EmailSendingAccount, 'DEVELOPER');
    assert.ok(JSON.stringify(pool.Properties.EmailConfiguration.From).includes(ident.sesFromAddress!));
    assert.ok(JSON.stringify(pool.Properties.EmailConfiguration.SourceArn).includes(`identity/${ident.sesIdentity}`));
  });
});

describe('least privilege', () => {
  const names = ['Authorizer', 'AzureOpenai', 'BedrockClaude', 'Gemini', 'Dispatcher', 'AuditWriter', 'AuditDigest', 'Scheduler',
    'Provisioner', 'AdminApi'];
  // Actions that take no resource-level permission, so * is the only form: the dispatcher's two EC2
  // Describe actions (its VPC attachment) and the scheduler's sqs:ListQueues.
  const noResourceLevel = (name: string, s: any) => list<string>(s.Action).every((a) =>
    (name === 'Dispatcher' && ['ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets'].includes(a))
    || (name === 'Scheduler' && a === 'sqs:ListQueues'));
  test('no role has a * resource, and none may delete or change retention', () => {
    for (const name of names) {
      for (const s of statementsOf(template, name)) {
        assert.ok(!list(s.Resource).includes('*') || noResourceLevel(name, s), `${name}: ${JSON.stringify(s)}`);
        for (const a of list<string>(s.Action)) {
          assert.ok(!/^s3:(DeleteObject|PutObjectRetention|PutObjectLegalHold|BypassGovernanceRetention|\*)/.test(a), `${name}: ${a}`);
        }
      }
    }
  });
  test('only the digest job may sign, and only with the digest key', () => {
    for (const name of names) {
      const signs = statementsOf(template, name).filter((s) => list<string>(s.Action).includes('kms:Sign'));
      assert.equal(signs.length, name === 'AuditDigest' ? 1 : 0, name);
    }
  });
  test('routes may make body data keys only under the bodies\' encryption context', () => {
    for (const name of ['AzureOpenai', 'BedrockClaude', 'Gemini']) {
      const onBodiesKey = statementsOf(template, name).filter((s) => JSON.stringify(s.Resource).includes('AuditBodiesKey'));
      assert.equal(onBodiesKey.length, 1, name);
      assert.deepEqual(onBodiesKey[0].Condition, { StringEquals: { 'kms:EncryptionContext:purpose': 'llm-gateway-audit-bodies' } });
    }
  });
  test('the auditors\' role reads and verifies, and writes nothing but its own query results', () => {
    const id = Object.keys(resourcesOf(template, 'AWS::IAM::Role')).find((r) => r.startsWith('AuditorRole'))!;
    const statements = Object.values(resourcesOf(template, 'AWS::IAM::Policy'))
      .filter((p) => p.Properties.Roles.some((r: any) => r.Ref === id))
      .flatMap((p) => p.Properties.PolicyDocument.Statement);
    const actions = statements.filter((s) => !JSON.stringify(s.Resource).includes('QueryResults'))
      .flatMap((s) => list<string>(s.Action));
    for (const a of ['kms:Verify', 'kms:GetPublicKey', 's3:ListBucketVersions', 'kms:Decrypt']) assert.ok(actions.includes(a), a);
    assert.deepEqual(actions.filter((a) => /Put|Delete|Sign$|Encrypt|GenerateDataKey|\*$/.test(a) && !/^s3:(GetObject|GetBucket|List)\*$/.test(a)), []);
  });
  test('the audit writer puts under audit/ only', () => {
    const puts = statementsOf(template, 'AuditWriter').filter((s) => list<string>(s.Action).includes('s3:PutObject'));
    assert.equal(puts.length, 1);
    assert.match(JSON.stringify(puts[0].Resource), /\/audit\/\*"/);
  });
  test('with tracing on, only the X-Ray actions (and those without resource-level permissions) have a * resource', () => {
    const staging = build({ envName: 'staging' }).template;
    for (const name of names) {
      // minimizePolicies may merge X-Ray's actions with the others that take no resource.
      for (const s of statementsOf(staging, name).filter((s) => list(s.Resource).includes('*'))) {
        for (const a of list<string>(s.Action)) {
          assert.ok(/^xray:/.test(a) || noResourceLevel(name, { Action: [a] }), `${name}: ${a}`);
        }
      }
    }
  });
});

describe('cdk-nag', () => {
  test('the check is live: an unencrypted queue without a DLQ is reported', () => {
    // With annotationsInValidationReport on, synth stops at the first error: read the annotations instead.
    const { stack: s } = build({
      extra: (st) => new Queue(st, 'Careless', { encryption: QueueEncryption.UNENCRYPTED }),
      context: { '@aws-cdk/core:annotationsInValidationReport': false },
    });
    const found = Annotations.fromStack(s).findError('*', Match.stringLikeRegexp('AwsSolutions-SQS'));
    assert.ok(found.some((e) => e.id.includes('Careless')), JSON.stringify(found.map((e) => e.id)));
  });
  for (const envName of ['dev', 'staging', 'prod'] as const) {
    for (const region of config.environments[envName].regions) {
      test(`AwsSolutions: no unsuppressed finding (${envName}, ${region})`, () => {
        const s = envName === 'dev' && region === 'us-east-1' ? stack : build({ envName, region }).stack;
        const a = Annotations.fromStack(s);
        const errors = a.findError('*', Match.stringLikeRegexp('AwsSolutions-.*'));
        const warnings = a.findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'));
        assert.deepEqual([...errors, ...warnings].map((e) => `${e.id}: ${e.entry.data}`), []);
      });
    }
  }
});

describe('function code', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'gateway-lambda-'));
  const saved = process.env.GATEWAY_LAMBDA_DIR;
  after(() => {
    if (saved === undefined) delete process.env.GATEWAY_LAMBDA_DIR;
    else process.env.GATEWAY_LAMBDA_DIR = saved;
  });
  test('real mode refuses to synthesize without the cargo lambda output', () => {
    process.env.GATEWAY_LAMBDA_DIR = tmp;
    assert.throws(() => build({ assets: 'real' }), /authorizer: no .*bootstrap; run cargo lambda build/);
  });
  test('real mode takes each function\'s own bootstrap', () => {
    for (const f of FUNCTIONS) {
      mkdirSync(path.join(tmp, f), { recursive: true });
      writeFileSync(path.join(tmp, f, 'bootstrap'), `binary of ${f}\n`);
    }
    process.env.GATEWAY_LAMBDA_DIR = tmp;
    const real = build({ assets: 'real' }).template;
    const keys = Object.values(resourcesOf(real, 'AWS::Lambda::Function')).map((f) => JSON.stringify(f.Properties.Code));
    assert.equal(new Set(keys).size, FUNCTIONS.length);
    const auto = build({ assets: 'auto' });
    assert.deepEqual(Annotations.fromStack(auto.stack).findWarning('*', Match.stringLikeRegexp('placeholder')), []);
  });
});

test('a configured provider region reaches its route, for the audit trail and regional prices', () => {
  const config = JSON.parse(JSON.stringify(loadConfig()));
  config.providers['azure-openai'].region = 'japaneast';
  const { template } = build({ config: parseConfig(config) });
  assert.equal(envOf(template, 'AzureOpenai').GATEWAY_AZURE_OPENAI_REGION, 'japaneast');
  assert.equal(envOf(template, 'Gemini').GATEWAY_GEMINI_REGION, undefined, 'none configured');
});

describe('environment variables the code reads', () => {
  // Read from the Rust sources: every GATEWAY_/COGNITO_ variable is set on some function or is an
  // optional one whose default is right when deployed.
  const defaults: Record<string, string> = {
    COGNITO_REGION: 'default AWS_REGION',
    COGNITO_JWKS_URL: 'default the pool\'s public JWKS',
    GATEWAY_SCOPE_POLICY_FILE: 'optional: the policy built into the binaries',
    GATEWAY_AUDIT_DIGEST_MAX_HOURS: 'set',
    GATEWAY_MAX_REQUEST_BYTES: 'default 6 MiB, the Lambda payload limit',
    GATEWAY_STREAM_CUT_MARGIN_MS: 'default 5000',
    GATEWAY_STREAM_IDLE_TIMEOUT_MS: 'default 300000',
    GATEWAY_QUEUE_INLINE_MAX_BYTES: 'default 192 KiB',
    GATEWAY_DISPATCH_FLUSH_MS: 'default 25',
    GATEWAY_BEDROCK_REGION: 'set',
    GATEWAY_REPLY_QUEUE_IDLE_SECS: 'default 3600 (an hour without a heartbeat)',
    // Set only where configured (dev has no SES identity and no hosted sign-in prefix).
    GATEWAY_MAIL_FROM: 'optional: unset, Cognito sends its own invitations',
    GATEWAY_SIGN_IN_URL: 'optional: unset, invitations name no sign-in page',
    GATEWAY_PRICE_FILE: 'optional: the price table built into the audit writer (config/prices.json)',
    GATEWAY_AZURE_OPENAI_REGION: 'optional: set from providers.azure-openai.region where configured',
    GATEWAY_GEMINI_REGION: 'optional: set from providers.gemini.region where configured',
  };
  const repo = path.join(__dirname, '..', '..');
  const read = (dir: string): string[] => readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? read(p) : p.endsWith('.rs') ? [readFileSync(p, 'utf8')] : [];
  });
  test('every variable read is set by the stack or has a documented default', () => {
    // A function whose crate is not written yet (the stack may name it first) has nothing to read.
    const sources = [path.join(repo, 'shared', 'src'), ...FUNCTIONS.map((f) => path.join(repo, 'functions', f, 'src'))]
      .filter((dir) => existsSync(dir));
    const read_ = new Set(sources.flatMap(read).flatMap((s) => [...s.matchAll(/"((?:GATEWAY|COGNITO)_[A-Z0-9_]+)"/g)].map((m) => m[1])));
    assert.ok(read_.size > 20, 'found the variables');
    const set = new Set(Object.values(resourcesOf(template, 'AWS::Lambda::Function'))
      .flatMap((f) => Object.keys(f.Properties.Environment.Variables)));
    const unset = [...read_].filter((v) => !set.has(v) && !(v in defaults) && !v.startsWith('GATEWAY_LOCAL_'));
    assert.deepEqual(unset, []);
  });
});
