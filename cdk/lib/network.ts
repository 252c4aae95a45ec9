// The dispatcher's network: a VPC of its own whose only ways out are the NAT gateways (to Azure OpenAI and
// Gemini, public HTTPS endpoints) and VPC endpoints for the AWS services it calls. Nothing else runs in it.
import {
  Aws, CfnOutput, Fn, RemovalPolicy, Stack,
  aws_ec2 as ec2,
  aws_iam as iam,
  aws_lambda as lambda,
  aws_logs as logs,
} from 'aws-cdk-lib';
import { NagSuppressions } from 'cdk-nag';
import { EnvironmentName, GatewayConfig } from './config';
import { Buckets, Keys, Queues } from './storage';

export interface NetworkProps {
  config: GatewayConfig;
  envName: EnvironmentName;
  prefix: string;
  removal: RemovalPolicy;
  keys: Keys;
  buckets: Buckets;
  queues: Queues;
}

export interface DispatcherNetwork {
  vpc: ec2.Vpc;
  /** Where the dispatcher's network interfaces go (private subnets, with or without NAT). */
  subnets: ec2.SubnetSelection;
  securityGroup: ec2.SecurityGroup;
  endpointSecurityGroup: ec2.SecurityGroup;
  interfaceEndpoints: Map<string, ec2.InterfaceVpcEndpoint>;
  s3Endpoint: ec2.GatewayVpcEndpoint;
  flowLogGroup: logs.LogGroup;
  /** `nat`: providers reachable through the NAT gateways; `isolated`: AWS endpoints only. */
  egress: 'nat' | 'isolated';
}

/**
 * The interface endpoints, by the service the dispatcher calls through each. Only `sqs`, `secretsmanager` and
 * `bedrock-runtime` are called by the dispatcher's code today (SQS, S3 and Secrets Manager use KMS on its
 * behalf, outside the VPC); `kms` keeps a direct KMS call private should one be added.
 */
export const INTERFACE_ENDPOINTS = {
  sqs: ec2.InterfaceVpcEndpointAwsService.SQS,
  kms: ec2.InterfaceVpcEndpointAwsService.KMS,
  secretsmanager: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
  'bedrock-runtime': ec2.InterfaceVpcEndpointAwsService.BEDROCK_RUNTIME,
} as const;

/** The dispatcher's VPC, or undefined when no provider uses the queue transport (no dispatcher then). */
export function createNetwork(stack: Stack, props: NetworkProps): DispatcherNetwork | undefined {
  if (props.queues.requests.size === 0) return undefined;
  const { config, envName, prefix, removal, keys, buckets } = props;
  const env = config.environments[envName];
  const net = env.network;
  const egress = net.natGateways > 0 ? 'nat' : 'isolated';
  const privateType = egress === 'nat' ? ec2.SubnetType.PRIVATE_WITH_EGRESS : ec2.SubnetType.PRIVATE_ISOLATED;

  const flowLogGroup = new logs.LogGroup(stack, 'VpcFlowLogs', {
    retention: logs.RetentionDays.ONE_YEAR,
    encryptionKey: keys.data,
    removalPolicy: removal,
  });
  const vpc = new ec2.Vpc(stack, 'DispatcherVpc', {
    ipAddresses: ec2.IpAddresses.cidr(net.vpcCidr),
    maxAzs: net.maxAzs,
    natGateways: net.natGateways,
    // Public subnets hold the NAT gateways and nothing else, so they get the smallest size AWS allows.
    subnetConfiguration: [
      ...(egress === 'nat' ? [{ name: 'nat', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 28 }] : []),
      { name: 'dispatcher', subnetType: privateType },
    ],
    // Nothing is placed in the default security group. Closing it takes a CDK custom-resource function
    // (Node.js, managed policy) in a stack that otherwise runs only the gateway's own code; see README.
    restrictDefaultSecurityGroup: false,
    flowLogs: {
      all: {
        destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogGroup),
        trafficType: ec2.FlowLogTrafficType.ALL,
      },
    },
  });
  const subnets: ec2.SubnetSelection = { subnetType: privateType };
  // The addresses the providers see: what an allow-list at Azure or Google would name.
  const natIps = vpc.node.findAll().filter((c): c is ec2.CfnEIP => c instanceof ec2.CfnEIP).map((e) => e.ref);
  if (natIps.length > 0) {
    new CfnOutput(stack, 'DispatcherEgressIps', {
      description: 'public IPs of the NAT gateways the dispatcher reaches providers through',
      value: Fn.join(',', natIps),
    });
  }

  const securityGroup = new ec2.SecurityGroup(stack, 'DispatcherSecurityGroup', {
    vpc,
    description: `${prefix} dispatcher: HTTPS out only (providers through the NAT, AWS endpoints)`,
    allowAllOutbound: false,
  });
  // DNS needs no rule: security groups do not filter traffic to the VPC's Route 53 Resolver.
  securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS');

  const endpointSecurityGroup = new ec2.SecurityGroup(stack, 'EndpointSecurityGroup', {
    vpc,
    description: `${prefix} interface endpoints: HTTPS from the dispatcher only`,
    allowAllOutbound: false,
  });
  endpointSecurityGroup.addIngressRule(securityGroup, ec2.Port.tcp(443), 'HTTPS from the dispatcher');

  // Endpoint policies draw the data perimeter: this account's principals, on this account's resources
  // where the service's resources are the account's own. What each role may do stays with IAM.
  const account = Aws.ACCOUNT_ID;
  const inAccount = { StringEquals: { 'aws:PrincipalAccount': account } };
  const arn = (service: string, resource: string) => `arn:${Aws.PARTITION}:${service}:${Aws.REGION}:${account}:${resource}`;
  const policies: Record<keyof typeof INTERFACE_ENDPOINTS, iam.PolicyStatement> = {
    sqs: new iam.PolicyStatement({
      principals: [new iam.AnyPrincipal()],
      actions: ['sqs:*'],
      resources: [arn('sqs', '*')],
      conditions: inAccount,
    }),
    kms: new iam.PolicyStatement({
      principals: [new iam.AnyPrincipal()],
      actions: ['kms:*'],
      resources: [arn('kms', 'key/*')],
      conditions: inAccount,
    }),
    secretsmanager: new iam.PolicyStatement({
      principals: [new iam.AnyPrincipal()],
      actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'],
      resources: [arn('secretsmanager', 'secret:*')],
      conditions: inAccount,
    }),
    // Foundation models belong to AWS, not to the account: only the caller is pinned.
    'bedrock-runtime': new iam.PolicyStatement({
      principals: [new iam.AnyPrincipal()],
      actions: ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'],
      resources: ['*'],
      conditions: inAccount,
    }),
  };
  const interfaceEndpoints = new Map<string, ec2.InterfaceVpcEndpoint>();
  for (const [name, service] of Object.entries(INTERFACE_ENDPOINTS) as [keyof typeof INTERFACE_ENDPOINTS, ec2.InterfaceVpcEndpointAwsService][]) {
    const endpoint = vpc.addInterfaceEndpoint(`Endpoint-${name}`, {
      service,
      subnets,
      securityGroups: [endpointSecurityGroup],
      // open: true would admit the whole VPC CIDR; only the dispatcher's group is admitted above.
      open: false,
      privateDnsEnabled: true,
    });
    endpoint.addToPolicy(policies[name]);
    interfaceEndpoints.set(name, endpoint);
  }
  // Traced functions send segments from inside the VPC; without a NAT that needs its own endpoint.
  if (env.tracing && egress === 'isolated') {
    const xray = vpc.addInterfaceEndpoint('Endpoint-xray', {
      service: ec2.InterfaceVpcEndpointAwsService.XRAY,
      subnets,
      securityGroups: [endpointSecurityGroup],
      open: false,
      privateDnsEnabled: true,
    });
    xray.addToPolicy(new iam.PolicyStatement({
      principals: [new iam.AnyPrincipal()],
      actions: ['xray:PutTraceSegments', 'xray:PutTelemetryRecords'],
      resources: ['*'],
      conditions: inAccount,
    }));
    interfaceEndpoints.set('xray', xray);
  }

  // S3 through the gateway endpoint: the payload bucket only (the dispatcher reads request bodies and writes
  // response bodies and done markers there; its audit events go to the audit queue, not to a bucket).
  const s3Endpoint = vpc.addGatewayEndpoint('Endpoint-s3', {
    service: ec2.GatewayVpcEndpointAwsService.S3,
    subnets: [subnets],
  });
  s3Endpoint.addToPolicy(new iam.PolicyStatement({
    principals: [new iam.AnyPrincipal()],
    actions: ['s3:GetObject', 's3:PutObject'],
    resources: [buckets.payloads.arnForObjects('*')],
    conditions: inAccount,
  }));
  // HeadObject on a missing key answers 404 (not 403) only with ListBucket, which the done-marker check reads.
  s3Endpoint.addToPolicy(new iam.PolicyStatement({
    principals: [new iam.AnyPrincipal()],
    actions: ['s3:ListBucket'],
    resources: [buckets.payloads.bucketArn],
    conditions: inAccount,
  }));

  return { vpc, subnets, securityGroup, endpointSecurityGroup, interfaceEndpoints, s3Endpoint, flowLogGroup, egress };
}

/**
 * The network-interface permissions Lambda uses the function's role for when it attaches the function to the
 * VPC, instead of the AWSLambdaVPCAccessExecutionRole managed policy (which grants them on every resource).
 */
export function grantNetworkInterfaces(fn: lambda.Function, network: DispatcherNetwork) {
  const ec2Arn = (resource: string) => `arn:${Aws.PARTITION}:ec2:${Aws.REGION}:${Aws.ACCOUNT_ID}:${resource}`;
  const subnetIds = network.vpc.selectSubnets(network.subnets).subnetIds;
  fn.addToRolePolicy(new iam.PolicyStatement({
    actions: ['ec2:CreateNetworkInterface'],
    resources: [
      ec2Arn('network-interface/*'),
      ...subnetIds.map((id) => ec2Arn(`subnet/${id}`)),
      ec2Arn(`security-group/${network.securityGroup.securityGroupId}`),
    ],
  }));
  fn.addToRolePolicy(new iam.PolicyStatement({
    actions: ['ec2:DeleteNetworkInterface', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses'],
    resources: [ec2Arn('network-interface/*')],
  }));
  fn.addToRolePolicy(new iam.PolicyStatement({
    actions: ['ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets'],
    resources: ['*'],
  }));
  NagSuppressions.addResourceSuppressions(fn.role!, [{
    id: 'AwsSolutions-IAM5',
    reason: 'VPC attachment: EC2 Describe actions (DescribeNetworkInterfaces, DescribeSubnets) support no resource-level permissions, so Resource * is the only form AWS accepts; the network interfaces Lambda creates and deletes get their ids at run time, hence network-interface/* in this account and region (creation is further limited to the dispatcher\'s subnets and security group)',
    appliesTo: [
      'Resource::*',
      'Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-interface/*',
    ],
  }], true);
}
