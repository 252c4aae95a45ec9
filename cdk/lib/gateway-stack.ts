// The gateway's stack: one per environment and region. Each part lives in its own module; this file
// only puts them together in dependency order and names the outputs.
import { CfnOutput, RemovalPolicy, Stack, StackProps, aws_cloudwatch as cw, aws_lambda as lambda } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { createApis } from './api';
import { createAuditorRole } from './audit-access';
import { EnvironmentName, GatewayConfig } from './config';
import { AssetMode, FunctionName, createFunctions } from './functions';
import { createIdentity } from './identity';
import { pascal } from './names';
import { createNetwork, grantNetworkInterfaces } from './network';
import { Operations, createOperations } from './operations';
import { createBuckets, createKeys, createQueues, createTables } from './storage';
import { createWaf } from './waf';

export { AssetMode, FUNCTIONS, FunctionName, lambdaOutputDir, PLACEHOLDER_ASSET, REPLY_QUEUE_PREFIX } from './functions';

export interface GatewayStackProps extends StackProps {
  config: GatewayConfig;
  envName: EnvironmentName;
  assets: AssetMode;
}

export class GatewayStack extends Stack {
  readonly functions: Map<FunctionName, lambda.Function>;
  /** Every alarm of the stack (the operations module gives them an action). */
  readonly alarms: cw.Alarm[] = [];
  readonly operations: Operations;

  constructor(scope: Construct, id: string, props: GatewayStackProps) {
    super(scope, id, props);
    const { config, envName } = props;
    const prefix = `${config.project}-${envName}`;
    const removal = envName === 'prod' ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    const keys = createKeys(this, prefix);
    const buckets = createBuckets(this, config.environments[envName], keys, removal);
    const queues = createQueues(this, config, envName, config.functions, keys);
    const tables = createTables(this, prefix, keys, removal);
    const identity = createIdentity(this, config, envName, prefix, { dataKey: keys.data, removal });
    // ---- network: the dispatcher's VPC and endpoints (lib/network.ts); before the functions, which it holds
    const network = createNetwork(this, { config, envName, prefix, removal, keys, buckets, queues });
    const fns = createFunctions(this, {
      config, envName, assets: props.assets, prefix, removal, keys, buckets, queues, identity, tables,
      dispatcherNetwork: network,
    });
    this.functions = fns.functions;
    if (network) grantNetworkInterfaces(fns.functions.get('dispatcher')!, network);
    this.alarms.push(...queues.dlqAlarms, ...fns.alarms);

    // ---- api: API Gateway per provider, custom domain, usage plans, WAF (lib/api.ts, lib/waf.ts)
    const api = createApis(this, { config, envName, prefix, removal, keys, functions: fns.functions });
    const waf = createWaf(this, { config, envName, prefix, removal, keys, stages: api.stages });
    this.alarms.push(...api.alarms);
    for (const [provider, url] of api.urls) new CfnOutput(this, `ApiUrl${pascal(provider)}`, { value: url });
    new CfnOutput(this, 'ApiUrlAdmin', { value: api.adminUrl });
    new CfnOutput(this, 'WebAclArn', { value: waf.webAcl.attrArn });
    if (api.domain) {
      // Point the domain's DNS here when the stack does not (no hostedZoneId): a CNAME or alias per region.
      new CfnOutput(this, 'ApiDomainTarget', { value: api.domain.domainNameAliasDomainName });
    }
    // The secrets to fill after deploy (README, "Deploy"): values never pass through the template.
    for (const [provider, secret] of fns.secrets) {
      new CfnOutput(this, `${pascal(provider)}KeySecretArn`, { value: secret.secretArn });
    }
    new CfnOutput(this, 'ProvisioningIdentitySecretArn', { value: fns.provisioningIdentity.secretArn });
    new CfnOutput(this, 'ProvisioningBucketName', { value: buckets.provisioning.bucketName });
    new CfnOutput(this, 'ReportsBucketName', { value: buckets.reports.bucketName });

    // ---- operations: alarm topic, dashboard, CloudTrail, Glue/Athena, account toggles (lib/operations.ts)
    const auditors = createAuditorRole(this, prefix, keys, buckets);
    this.operations = createOperations(this, {
      config, envName, prefix, removal, buckets, queues, tables, functions: fns.functions, auditors,
      alarms: this.alarms,
    });

    new CfnOutput(this, 'AuditorRoleArn', { value: auditors.roleArn });
    new CfnOutput(this, 'AuditBucketName', { value: buckets.audit.bucketName });
    new CfnOutput(this, 'AuditDigestKeyArn', { value: keys.auditDigest.keyArn });
    new CfnOutput(this, 'AuditBodiesKeyArn', { value: keys.auditBodies.keyArn });
    new CfnOutput(this, 'AuditQueueUrl', { value: queues.audit.queueUrl });
    new CfnOutput(this, 'RevocationsTableName', { value: tables.revocations.tableName });
    new CfnOutput(this, 'ApiKeysTableName', { value: tables.apiKeys.tableName });
    new CfnOutput(this, 'DepartmentsTableName', { value: tables.departments.tableName });
    new CfnOutput(this, 'UsageTableName', { value: tables.usage.tableName });
  }
}
