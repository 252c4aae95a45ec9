// The front door: one API Gateway REST API per provider, so each API's own gateway responses speak that
// provider's error shape. Every method is the provider's route function behind the REQUEST authorizer,
// streamed, with the department's usage plan applied through the key the authorizer returns. A fourth
// API serves the admin API (`/admin/...`, buffered, admin error shape) behind the same authorizer.
import {
  ArnFormat, Duration, RemovalPolicy, SecretValue, Stack, Token,
  aws_apigateway as apigw,
  aws_certificatemanager as acm,
  aws_cloudwatch as cw,
  aws_ec2 as ec2,
  aws_iam as iam,
  aws_lambda as lambda,
  aws_logs as logs,
  aws_route53 as route53,
  aws_route53_targets as route53Targets,
  aws_secretsmanager as sm,
} from 'aws-cdk-lib';
import { NagSuppressions } from 'cdk-nag';
import { EnvironmentName, GatewayConfig, PROVIDERS, ProviderName } from './config';
import { ADMIN_API_TIMEOUT, FunctionName } from './functions';
import { pascal } from './names';
import { ADMIN_GATEWAY_ERRORS, GATEWAY_ERRORS, adminGatewayResponse, gatewayResponse } from './provider-errors';
import { Keys } from './storage';

/** API Gateway's longest integration timeout, allowed only for streamed responses. */
export const STREAM_INTEGRATION_TIMEOUT = Duration.minutes(15);

/** The admin API's path prefix (and base path under the custom domain). */
export const ADMIN_API = 'admin';
/** What a REST API of the stack serves: a provider's route, or the admin API. */
export type ApiName = ProviderName | typeof ADMIN_API;

/** 5xx answers per API in five minutes that raise its alarm. */
const SERVER_ERROR_ALARM_THRESHOLD = 10;

export interface ApiProps {
  config: GatewayConfig;
  envName: EnvironmentName;
  prefix: string;
  removal: RemovalPolicy;
  keys: Keys;
  functions: Map<FunctionName, lambda.Function>;
}

export interface GatewayApis {
  apis: Map<ProviderName, apigw.RestApi>;
  /** The base URL a client gives its SDK for each provider (custom domain, or execute-api + stage + prefix). */
  urls: Map<ProviderName, string>;
  /** The admin API and its base URL (`https://<domain>/admin`, or execute-api + stage + `/admin`). */
  admin: apigw.RestApi;
  adminUrl: string;
  /** Every API's stage, the providers' first and the admin API's last (WAF associates them all). */
  stages: apigw.Stage[];
  domain: apigw.DomainName | undefined;
  /** `{department: usage-plan key value}`, read by the authorizer. */
  usageKeysSecret: sm.Secret;
  /** 5xx alarms, one per API. */
  alarms: cw.Alarm[];
}

/**
 * The access log line: who called (caller, address, agent, principal and department from the authorizer's
 * context), what (method, resource, path without the query string, which may hold a `key=` credential),
 * and how it ended (status, latencies, integration, authorizer, WAF and gateway errors). No header, no
 * query string and no API key value (`$context.identity.apiKey`) is logged, only the key's id.
 */
export function accessLogFormat(provider: ApiName): string {
  return JSON.stringify({
    provider,
    requestId: '$context.requestId',
    extendedRequestId: '$context.extendedRequestId',
    requestTime: '$context.requestTime',
    requestTimeEpoch: '$context.requestTimeEpoch',
    apiId: '$context.apiId',
    stage: '$context.stage',
    domainName: '$context.domainName',
    ip: '$context.identity.sourceIp',
    caller: '$context.identity.caller',
    user: '$context.identity.user',
    userAgent: '$context.identity.userAgent',
    apiKeyId: '$context.identity.apiKeyId',
    httpMethod: '$context.httpMethod',
    resourcePath: '$context.resourcePath',
    path: '$context.path',
    protocol: '$context.protocol',
    status: '$context.status',
    responseLength: '$context.responseLength',
    responseLatency: '$context.responseLatency',
    integrationLatency: '$context.integration.latency',
    integrationStatus: '$context.integration.status',
    functionStatus: '$context.integration.integrationStatus',
    integrationError: '$context.integration.error',
    // The authorizer's context (shared/src/auth/context.rs AuthContext::to_fields).
    principalId: '$context.authorizer.principalId',
    sub: '$context.authorizer.sub',
    username: '$context.authorizer.username',
    department: '$context.authorizer.department',
    scopes: '$context.authorizer.scopes',
    authMethod: '$context.authorizer.authMethod',
    clientId: '$context.authorizer.clientId',
    credentialSource: '$context.authorizer.credentialSource',
    authorizerStatus: '$context.authorizer.status',
    authorizerLatency: '$context.authorizer.latency',
    authorizerError: '$context.authorizer.error',
    wafResponseCode: '$context.wafResponseCode',
    errorType: '$context.error.responseType',
    errorMessage: '$context.error.message',
  });
}

export function createApis(stack: Stack, props: ApiProps): GatewayApis {
  const { config, envName, prefix, removal, keys, functions } = props;
  const env = config.environments[envName];
  const api = env.api;
  const region = stack.region;
  if (Token.isUnresolved(region)) throw new Error('the gateway stack needs a concrete region (env.region)');

  const accessLogs = new logs.LogGroup(stack, 'ApiAccessLogs', {
    retention: logs.RetentionDays.ONE_YEAR,
    encryptionKey: keys.data,
    removalPolicy: removal,
  });
  const account = apiGatewayAccount(stack, prefix);
  const domain = api.domain ? customDomain(stack, api.domain.name, api.domain.certificateArns, region) : undefined;
  const authorizerFn = functions.get('authorizer')!;
  const isPrivate = api.endpointType === 'private';
  const vpcEndpoints = api.vpcEndpointIds.map((id) =>
    ec2.InterfaceVpcEndpoint.fromInterfaceVpcEndpointAttributes(stack, `ExecuteApiEndpoint${pascal(id)}`, { vpcEndpointId: id, port: 443 }));

  const apis = new Map<ProviderName, apigw.RestApi>();
  const urls = new Map<ProviderName, string>();
  const alarms: cw.Alarm[] = [];

  /** A REST API with the stack's endpoint type, stage settings and access logs; `responses` its errors. */
  const restApiFor = (name: ApiName, description: string, responses: { type: string; statusCode: string; responseHeaders: Record<string, string>; template: string }[], usageKeys: boolean) => {
    // `AdminApi` is the admin-api function's id: the admin REST API's ids start with `AdminRest`.
    const id = name === ADMIN_API ? 'AdminRest' : pascal(name);
    const restApi = new apigw.RestApi(stack, `${id}Api`, {
      restApiName: `${prefix}-${name}`,
      description,
      endpointConfiguration: isPrivate
        ? { types: [apigw.EndpointType.PRIVATE], vpcEndpoints }
        : { types: [apigw.EndpointType.REGIONAL] },
      policy: isPrivate ? privateApiPolicy(api.vpcEndpointIds) : undefined,
      // With a custom domain, the domain (behind WAF, TLS 1.2) is the one way in.
      disableExecuteApiEndpoint: domain !== undefined,
      // Bodies reach the functions base64-encoded, byte for byte, whatever their content type.
      binaryMediaTypes: ['*/*'],
      apiKeySourceType: usageKeys ? apigw.ApiKeySourceType.AUTHORIZER : undefined,
      // The account-level role is made once below, not once per API.
      cloudWatchRole: false,
      deployOptions: {
        stageName: api.stageName,
        accessLogDestination: new apigw.LogGroupLogDestination(accessLogs),
        accessLogFormat: apigw.AccessLogFormat.custom(accessLogFormat(name)),
        // Errors only, and never data trace: execution logs at INFO and data traces would record
        // request headers (credentials) and bodies (prompts).
        loggingLevel: apigw.MethodLoggingLevel.ERROR,
        dataTraceEnabled: false,
        metricsEnabled: true,
        tracingEnabled: env.tracing,
        throttlingRateLimit: api.throttle.rateLimit,
        throttlingBurstLimit: api.throttle.burstLimit,
      },
    });
    // The CDK's own URL output names the execute-api URL, which is disabled with a domain; the stack
    // outputs the URL clients use instead.
    restApi.node.tryRemoveChild('Endpoint');
    // The stage's logging needs the account's CloudWatch role in place first.
    restApi.deploymentStage.node.addDependency(account);
    for (const r of responses) {
      restApi.addGatewayResponse(r.type, {
        type: apigw.ResponseType.of(r.type),
        statusCode: r.statusCode,
        responseHeaders: Object.keys(r.responseHeaders).length > 0 ? r.responseHeaders : undefined,
        templates: { 'application/json': r.template },
      });
    }
    // Clients put the token in one of several places (Authorization, api-key, x-api-key, x-goog-api-key,
    // ?key=): an identity source would make API Gateway answer 401 without calling the authorizer when
    // the listed one is absent, and caching would need one. So: none, and TTL 0 (the function caches
    // keys and policy itself, and revocations for GATEWAY_REVOCATION_CACHE_SECS).
    const authorizer = new apigw.RequestAuthorizer(stack, `${pascal(name)}Authorizer`, {
      authorizerName: `${prefix}-${name}`,
      handler: authorizerFn,
      identitySources: [],
      resultsCacheTtl: Duration.seconds(0),
    });
    (authorizer.node.defaultChild as apigw.CfnAuthorizer).addPropertyDeletionOverride('IdentitySource');
    // The functions read the route from event.path. Behind a base-path mapping API Gateway passes the
    // path with the base path (/<name>/...), so the proxy sits at the root; on an execute-api URL it
    // passes the path below the stage, so the proxy sits under /<name>/, as in the local stack
    // (local/src/apigw.rs).
    const parent = domain ? restApi.root : restApi.root.addResource(name);
    const proxy = parent.addResource('{proxy+}');
    if (domain) {
      domain.addBasePathMapping(restApi, { basePath: name, stage: restApi.deploymentStage });
    }
    const url = domain ? `https://${api.domain!.name}/${name}` : restApi.urlForPath(`/${name}`);
    alarms.push(new cw.Alarm(stack, `${id}ApiServerErrors`, {
      alarmDescription: `${prefix}: the ${name} API answered ${SERVER_ERROR_ALARM_THRESHOLD} or more 5xx in 5 minutes`,
      metric: restApi.metricServerError({ period: Duration.minutes(5), statistic: 'Sum' }),
      threshold: SERVER_ERROR_ALARM_THRESHOLD,
      evaluationPeriods: 1,
      comparisonOperator: cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: cw.TreatMissingData.NOT_BREACHING,
    }));
    return { restApi, authorizer, proxy, url };
  };

  for (const p of PROVIDERS) {
    const { restApi, authorizer, proxy, url } = restApiFor(p, `${prefix}: /${p}/ for the provider's stock SDK`,
      GATEWAY_ERRORS.map((spec) => ({ type: spec.type, ...gatewayResponse(p, spec) })), true);
    const method = proxy.addMethod('ANY', new apigw.LambdaIntegration(functions.get(p)!, {
      proxy: true,
      responseTransferMode: apigw.ResponseTransferMode.STREAM,
      timeout: STREAM_INTEGRATION_TIMEOUT,
      // A console test invoke skips the authorizer: no permission for it.
      allowTestInvoke: false,
    }), {
      authorizer,
      authorizationType: apigw.AuthorizationType.CUSTOM,
      apiKeyRequired: true,
    });
    NagSuppressions.addResourceSuppressions(method, [{
      id: 'AwsSolutions-COG4',
      reason: 'the REQUEST authorizer verifies the Cognito access tokens itself (issuer, client, expiry, groups) wherever the stock SDK puts them (Authorization, api-key, x-api-key, x-goog-api-key, ?key=), then applies the scope policy; a Cognito user pool authorizer reads only one header and knows no scopes policy',
    }]);
    urls.set(p, url);
    NagSuppressions.addResourceSuppressions(restApi, [{
      id: 'AwsSolutions-APIG2',
      reason: 'the API relays request bodies byte for byte to the provider (prompts, audio, any content type); the authorizer and the route function classify every request against the provider\'s grammar and refuse anything outside it (404/400 in the provider\'s shape), which a JSON-schema request validator cannot express',
    }]);
    apis.set(p, restApi);
  }

  // The admin API: `{proxy+}` under /admin (or at the root behind the domain's `admin` base path), ANY
  // to the admin-api function as a buffered Lambda proxy (29 s, API Gateway's default), the same
  // authorizer, which requires the admin scopes there. No usage plan: administrators need not be in a
  // department, and the stage's throttle bounds the API.
  const admin = restApiFor(ADMIN_API, `${prefix}: /${ADMIN_API}/ user administration (admin-api)`,
    ADMIN_GATEWAY_ERRORS.map((spec) => ({ type: spec.type, ...adminGatewayResponse(spec) })), false);
  const adminMethod = admin.proxy.addMethod('ANY', new apigw.LambdaIntegration(functions.get('admin-api')!, {
    proxy: true,
    timeout: ADMIN_API_TIMEOUT,
    allowTestInvoke: false,
  }), {
    authorizer: admin.authorizer,
    authorizationType: apigw.AuthorizationType.CUSTOM,
    apiKeyRequired: false,
  });
  NagSuppressions.addResourceSuppressions(adminMethod, [{
    id: 'AwsSolutions-COG4',
    reason: 'the REQUEST authorizer verifies the Cognito access token itself (issuer, client, expiry, groups, revocation) and grants the admin scope the request\'s resource and method need (admin:<resource> to change, admin:<resource>:read to read: admin:users, admin:apikeys, admin:billing) from the scope policy\'s groups; a Cognito user pool authorizer knows no scope policy and no revocations',
  }]);
  NagSuppressions.addResourceSuppressions(admin.restApi, [{
    id: 'AwsSolutions-APIG2',
    reason: 'the admin-api function validates every request itself and answers each failed rule by field (400 with details in the admin error shape), which a JSON-schema request validator cannot express for the CSV and query-parameter rules',
  }]);

  if (domain && api.domain!.hostedZoneId) {
    // Every region of the environment serves the same name: latency-based records, one per region.
    new route53.ARecord(stack, 'ApiAliasRecord', {
      zone: route53.HostedZone.fromHostedZoneId(stack, 'ApiHostedZone', api.domain!.hostedZoneId),
      recordName: `${api.domain!.name}.`,
      target: route53.RecordTarget.fromAlias(new route53Targets.ApiGatewayDomain(domain)),
      region,
      setIdentifier: `${prefix}-${region}`,
    });
  }

  const providerStages = [...apis.values()].map((a) => a.deploymentStage);
  const usageKeysSecret = createUsagePlans(stack, props, providerStages);
  authorizerFn.addEnvironment('GATEWAY_USAGE_KEYS_SECRET_ID', usageKeysSecret.secretArn);
  usageKeysSecret.grantRead(authorizerFn);
  return {
    apis, urls, admin: admin.restApi, adminUrl: admin.url, stages: [...providerStages, admin.restApi.deploymentStage],
    domain, usageKeysSecret, alarms,
  };
}

/**
 * One usage plan per department over every provider's stage, with its API key. Key values are generated
 * into one secret per department and reach the template only as dynamic references: the ApiKey's value,
 * and the authorizer's combined `{department: value}` secret.
 */
function createUsagePlans(stack: Stack, props: ApiProps, stages: apigw.Stage[]): sm.Secret {
  const { config, prefix, removal, keys } = props;
  const values: Record<string, SecretValue> = {};
  const secrets: sm.Secret[] = [];
  // `default` serves callers in no configured department (the authorizer falls back to it): without a
  // key API Gateway would refuse them with 403, since every method requires one. The stage's throttle.
  const plans: [string, { rateLimit: number; burstLimit: number; quotaPerDay?: number }][] = [
    ...Object.entries(config.departments),
    ['default', config.environments[props.envName].api.throttle],
  ];
  // The departments' plans as the admin API and the scheduler's usage-plans job manage them
  // (GATEWAY_USAGE_PLANS, shared/src/usage_plans.rs): each plan's id and the limits configured here.
  const managed: Record<string, { id: string; rate_limit: number; burst_limit: number; quota_per_day: number }> = {};
  const planArns: string[] = [];
  for (const [dept, limits] of plans) {
    const id = pascal(dept);
    const secret = new sm.Secret(stack, `UsageKey${id}`, {
      description: `${prefix}: API Gateway usage-plan key of department ${dept} (not a client credential)`,
      encryptionKey: keys.data,
      removalPolicy: removal,
      // API keys take at least 20 characters; no punctuation keeps the value one plain JSON string.
      generateSecretString: { passwordLength: 40, excludePunctuation: true, includeSpace: false },
    });
    const key = new apigw.ApiKey(stack, `UsageApiKey${id}`, {
      apiKeyName: `${prefix}-${dept}`,
      description: `${prefix}: usage-plan key of department ${dept}, returned by the authorizer`,
      value: secret.secretValue.unsafeUnwrap(),
      enabled: true,
    });
    const plan = new apigw.UsagePlan(stack, `UsagePlan${id}`, {
      name: `${prefix}-${dept}`,
      description: `${prefix}: department ${dept}`,
      throttle: { rateLimit: limits.rateLimit, burstLimit: limits.burstLimit },
      quota: limits.quotaPerDay === undefined ? undefined : { limit: limits.quotaPerDay, period: apigw.Period.DAY },
      apiStages: stages.map((stage) => ({ api: stage.restApi, stage })),
    });
    plan.addApiKey(key);
    if (dept !== 'default' && limits.quotaPerDay !== undefined) {
      managed[dept] = {
        id: plan.usagePlanId,
        rate_limit: limits.rateLimit,
        burst_limit: limits.burstLimit,
        quota_per_day: limits.quotaPerDay,
      };
      planArns.push(stack.formatArn({ service: 'apigateway', account: '', resource: '/usageplans', resourceName: plan.usagePlanId, arnFormat: ArnFormat.SLASH_RESOURCE_NAME }));
    }
    values[dept] = secret.secretValue;
    secrets.push(secret);
  }
  const setting = stack.toJsonString(managed);
  for (const name of ['admin-api', 'scheduler'] as const) {
    const fn = props.functions.get(name)!;
    fn.addEnvironment('GATEWAY_USAGE_PLANS', setting);
    // Read and change exactly the departments' plans (UpdateUsagePlan is a PATCH on the plan).
    fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['apigateway:GET', 'apigateway:PATCH'], resources: planArns }));
  }
  const combined = new sm.Secret(stack, 'UsageKeysSecret', {
    description: `${prefix}: department -> usage-plan key value, for the authorizer`,
    encryptionKey: keys.data,
    removalPolicy: removal,
    secretObjectValue: values,
  });
  for (const s of [...secrets, combined]) {
    NagSuppressions.addResourceSuppressions(s, [{
      id: 'AwsSolutions-SMG4',
      reason: 'usage-plan key values are not credentials: they only select a department\'s throttle and quota, are set by the authorizer after it has authenticated the caller, and are never given to clients; a rotation would have to change the API key, its usage-plan binding and the authorizer\'s combined secret together, which a deploy does (a new value replaces the ApiKey)',
    }]);
  }
  return combined;
}

/** A private API answers only requests through the listed execute-api VPC endpoints. */
function privateApiPolicy(vpcEndpointIds: string[]): iam.PolicyDocument {
  const invoke = { actions: ['execute-api:Invoke'], resources: ['execute-api:/*'], principals: [new iam.AnyPrincipal()] };
  return new iam.PolicyDocument({
    statements: [
      new iam.PolicyStatement({ ...invoke, effect: iam.Effect.ALLOW, conditions: { StringEquals: { 'aws:SourceVpce': vpcEndpointIds } } }),
      new iam.PolicyStatement({ ...invoke, effect: iam.Effect.DENY, conditions: { StringNotEquals: { 'aws:SourceVpce': vpcEndpointIds } } }),
    ],
  });
}

function customDomain(stack: Stack, name: string, certificateArns: Record<string, string>, region: string): apigw.DomainName {
  const certificateArn = certificateArns[region];
  if (!certificateArn) throw new Error(`api.domain.certificateArns has no certificate for ${region}`);
  return new apigw.DomainName(stack, 'ApiDomain', {
    domainName: name,
    certificate: acm.Certificate.fromCertificateArn(stack, 'ApiCertificate', certificateArn),
    endpointType: apigw.EndpointType.REGIONAL,
    securityPolicy: apigw.SecurityPolicy.TLS_1_2,
  });
}

/**
 * API Gateway writes execution and access logs with one role per account and region, shared by every
 * REST API there. It gets AWS's managed policy: scoping it to this stack's log groups would silently stop
 * the logs of any other API in the account. Retained, so deleting the stack does not leave the account
 * setting pointing at a deleted role.
 */
function apiGatewayAccount(stack: Stack, prefix: string): apigw.CfnAccount {
  const role = new iam.Role(stack, 'ApiGatewayCloudWatchRole', {
    assumedBy: new iam.ServicePrincipal('apigateway.amazonaws.com'),
    description: `API Gateway account-level logging role (set by ${prefix})`,
    managedPolicies: [iam.ManagedPolicy.fromAwsManagedPolicyName('service-role/AmazonAPIGatewayPushToCloudWatchLogs')],
  });
  role.applyRemovalPolicy(RemovalPolicy.RETAIN);
  NagSuppressions.addResourceSuppressions(role, [{
    id: 'AwsSolutions-IAM4',
    reason: 'the account-level API Gateway logging role serves every REST API of the account and region (execution logging at ERROR, cdk-nag APIG6, and access logs); AWS\'s AmazonAPIGatewayPushToCloudWatchLogs is the policy API Gateway documents for it, and a policy scoped to this stack\'s log groups would break the logs of other APIs',
    appliesTo: ['Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs'],
  }]);
  const account = new apigw.CfnAccount(stack, 'ApiGatewayAccount', { cloudWatchRoleArn: role.roleArn });
  account.applyRemovalPolicy(RemovalPolicy.RETAIN);
  return account;
}
