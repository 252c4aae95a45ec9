// One regional web ACL in front of every provider API's stage: an address allow list, a rate limit per
// client address, and AWS's managed rule groups tuned for a gateway whose request bodies are prompts.
import {
  Aws, RemovalPolicy, Stack,
  aws_apigateway as apigw,
  aws_logs as logs,
  aws_wafv2 as wafv2,
} from 'aws-cdk-lib';
import { EnvironmentName, GatewayConfig } from './config';
import { Keys } from './storage';

/**
 * Body rules of the managed groups counted instead of blocking. Request bodies here are prompts: they run
 * past 8 KB (SizeRestrictions_BODY) and carry code, HTML, paths, URLs and exploit write-ups that users ask
 * about (`<script>`, `../`, `http://169.254.169.254`, `${jndi:`, serialized Java). The gateway relays a
 * body byte for byte to the provider and nothing of ours interprets it as HTML, a path, a URL or Java,
 * so these rules would block legitimate prompts and protect nothing. Counted, they still show in the WAF
 * logs and metrics. Header, query and URI rules of the same groups keep blocking.
 */
export const COUNTED_BODY_RULES: Record<string, string[]> = {
  AWSManagedRulesCommonRuleSet: [
    'SizeRestrictions_BODY', 'CrossSiteScripting_BODY', 'GenericLFI_BODY', 'GenericRFI_BODY', 'EC2MetaDataSSRF_BODY',
  ],
  AWSManagedRulesKnownBadInputsRuleSet: ['JavaDeserializationRCE_BODY', 'Log4JRCE_BODY'],
};

/** Headers where clients put the gateway token (shared/src/auth/credential.rs), and cookies. */
export const CREDENTIAL_HEADERS = ['authorization', 'x-api-key', 'api-key', 'x-goog-api-key', 'cookie'];

export const RATE_LIMITED_BODY_KEY = 'rate-limited';
export const ADMIN_RATE_LIMITED_BODY_KEY = 'rate-limited-admin';

/**
 * The rate rule's answer. One body for every provider, since the ACL is shared: the keys each SDK reads
 * (Bedrock's `message`, Azure's and Gemini's `error.message`) and botocore's error code in the header.
 * Other blocks get each API's own WAF_FILTERED gateway response (403 in the provider's shape).
 */
export const RATE_LIMITED_BODY = JSON.stringify({
  message: 'Too many requests from your network address; retry after a pause',
  error: {
    code: 429,
    message: 'Too many requests from your network address; retry after a pause',
    status: 'RESOURCE_EXHAUSTED',
  },
});

/** The admin API's rate-limit answer, in its error shape (`throttled`, lib/provider-errors.ts). */
export const ADMIN_RATE_LIMITED_BODY = JSON.stringify({
  error: { code: 'throttled', message: 'Too many requests from your network address; retry after a pause' },
});

/**
 * Requests to the admin API, by URI path as WAF sees it: `/admin/...` behind the custom domain,
 * `/<stage>/admin/...` on the execute-api URL. No provider path starts so.
 */
export function adminPathStatement(stageName: string): wafv2.CfnWebACL.StatementProperty {
  const startsWith = (prefix: string): wafv2.CfnWebACL.StatementProperty => ({
    byteMatchStatement: {
      fieldToMatch: { uriPath: {} },
      positionalConstraint: 'STARTS_WITH',
      searchString: prefix,
      textTransformations: [{ priority: 0, type: 'NONE' }],
    },
  });
  return { orStatement: { statements: [startsWith('/admin/'), startsWith(`/${stageName}/admin/`)] } };
}

export interface WafProps {
  config: GatewayConfig;
  envName: EnvironmentName;
  prefix: string;
  removal: RemovalPolicy;
  keys: Keys;
  stages: apigw.Stage[];
}

export interface Waf {
  webAcl: wafv2.CfnWebACL;
  logGroup: logs.LogGroup;
}

export function createWaf(stack: Stack, props: WafProps): Waf {
  const { config, envName, prefix, removal, keys, stages } = props;
  const env = config.environments[envName];
  const visibility = (name: string): wafv2.CfnWebACL.VisibilityConfigProperty => ({
    cloudWatchMetricsEnabled: true,
    metricName: `${prefix}-${name}`,
    sampledRequestsEnabled: true,
  });

  const rules: wafv2.CfnWebACL.RuleProperty[] = [];
  if (env.allowedIps.length > 0) {
    const allowed = new wafv2.CfnIPSet(stack, 'AllowedIps', {
      name: `${prefix}-allowed`,
      description: `${prefix}: client addresses allowed to call the gateway`,
      scope: 'REGIONAL',
      ipAddressVersion: 'IPV4',
      addresses: env.allowedIps,
    });
    rules.push({
      name: 'BlockOutsideAllowedIps',
      priority: rules.length,
      action: { block: {} },
      statement: { notStatement: { statement: { ipSetReferenceStatement: { arn: allowed.attrArn } } } },
      visibilityConfig: visibility('outside-allowed-ips'),
    });
  }
  const managed = (name: string): wafv2.CfnWebACL.RuleProperty => ({
    name,
    priority: rules.length,
    overrideAction: { none: {} },
    statement: {
      managedRuleGroupStatement: {
        vendorName: 'AWS',
        name,
        ruleActionOverrides: (COUNTED_BODY_RULES[name] ?? []).map((rule) => ({ name: rule, actionToUse: { count: {} } })),
      },
    },
    visibilityConfig: visibility(name),
  });
  rules.push(managed('AWSManagedRulesAmazonIpReputationList'));
  // The provider APIs and the admin API answer a rate limit in their own shapes, so they count apart: the
  // admin API's requests by their path, everything else (whatever its path) in the providers' rule.
  const adminPath = adminPathStatement(env.api.stageName);
  rules.push({
    name: 'RatePerClientIp',
    priority: rules.length,
    // 429, which the SDKs retry with backoff; a 403 would end the caller's request for good.
    action: { block: { customResponse: { responseCode: 429, customResponseBodyKey: RATE_LIMITED_BODY_KEY,
      responseHeaders: [{ name: 'x-amzn-ErrorType', value: 'ThrottlingException' }] } } },
    statement: { rateBasedStatement: {
      limit: env.api.wafRateLimitPer5Min, evaluationWindowSec: 300, aggregateKeyType: 'IP',
      scopeDownStatement: { notStatement: { statement: adminPath } },
    } },
    visibilityConfig: visibility('rate-per-client-ip'),
  });
  rules.push({
    name: 'RatePerClientIpAdmin',
    priority: rules.length,
    action: { block: { customResponse: { responseCode: 429, customResponseBodyKey: ADMIN_RATE_LIMITED_BODY_KEY } } },
    statement: { rateBasedStatement: {
      limit: env.api.wafRateLimitPer5Min, evaluationWindowSec: 300, aggregateKeyType: 'IP', scopeDownStatement: adminPath,
    } },
    visibilityConfig: visibility('rate-per-client-ip-admin'),
  });
  rules.push(managed('AWSManagedRulesKnownBadInputsRuleSet'));
  rules.push(managed('AWSManagedRulesCommonRuleSet'));

  const webAcl = new wafv2.CfnWebACL(stack, 'WebAcl', {
    name: `${prefix}-api`,
    description: `${prefix}: every provider API of the gateway and the admin API`,
    scope: 'REGIONAL',
    defaultAction: { allow: {} },
    rules,
    customResponseBodies: {
      [RATE_LIMITED_BODY_KEY]: { contentType: 'APPLICATION_JSON', content: RATE_LIMITED_BODY },
      [ADMIN_RATE_LIMITED_BODY_KEY]: { contentType: 'APPLICATION_JSON', content: ADMIN_RATE_LIMITED_BODY },
    },
    // Logs and sampled requests (the console shows them) never hold a token, a query-string `key=` or
    // prompt text from rule match details.
    dataProtectionConfig: {
      dataProtections: [
        { field: { fieldType: 'SINGLE_HEADER', fieldKeys: CREDENTIAL_HEADERS }, action: 'SUBSTITUTION' },
        { field: { fieldType: 'QUERY_STRING' }, action: 'SUBSTITUTION' },
        { field: { fieldType: 'BODY' }, action: 'SUBSTITUTION' },
      ],
    },
    visibilityConfig: visibility('web-acl'),
  });

  stages.forEach((stage, i) => {
    new wafv2.CfnWebACLAssociation(stack, `WebAclAssociation${i}`, {
      resourceArn: stage.stageArn,
      webAclArn: webAcl.attrArn,
    });
  });

  // WAF delivers only to groups named aws-waf-logs-*; the data key's policy lets CloudWatch Logs use it
  // for every log group of this account and region.
  const logGroupName = `aws-waf-logs-${prefix}`;
  const logGroup = new logs.LogGroup(stack, 'WafLogs', {
    logGroupName,
    retention: logs.RetentionDays.ONE_YEAR,
    encryptionKey: keys.data,
    removalPolicy: removal,
  });
  const logging = new wafv2.CfnLoggingConfiguration(stack, 'WafLogging', {
    resourceArn: webAcl.attrArn,
    // The log group's ARN without the `:*` the CDK's logGroupArn ends with, which WAF refuses.
    logDestinationConfigs: [`arn:${Aws.PARTITION}:logs:${Aws.REGION}:${Aws.ACCOUNT_ID}:log-group:${logGroupName}`],
    redactedFields: [
      ...CREDENTIAL_HEADERS.map((name) => ({ singleHeader: { Name: name } })),
      { queryString: {} },
    ],
  });
  logging.node.addDependency(logGroup);
  return { webAcl, logGroup };
}
