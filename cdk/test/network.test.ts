import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { GatewayConfig, loadConfig, parseConfig } from '../lib/config';
import { INTERFACE_ENDPOINTS } from '../lib/network';
import { build, functionId, list, resourcesOf, statementsOf } from './helpers';

const config = loadConfig();
/** The shipped configuration with one change, validated as the app would. */
function configWith(change: (c: any) => void): GatewayConfig {
  const c = structuredClone(config) as any;
  change(c);
  return parseConfig(c);
}

const dev = build().template;
const prod = build({ envName: 'prod' }).template;
const isolated = build({ envName: 'staging', config: configWith((c) => { c.environments.staging.network.natGateways = 0; }) });

const ofType = (t: Template, type: string) => Object.entries(resourcesOf(t, type));
const subnetsOf = (t: Template, kind: 'Public' | 'Private' | 'Isolated') => ofType(t, 'AWS::EC2::Subnet')
  .filter(([, s]) => s.Properties.Tags.some((tag: any) => tag.Key === 'aws-cdk:subnet-type' && tag.Value === kind));
const endpointService = (e: any): string => JSON.stringify(e.Properties.ServiceName);
const dispatcherOf = (t: Template) => resourcesOf(t, 'AWS::Lambda::Function')[functionId(t, 'Dispatcher')];

describe('the dispatcher\'s VPC', () => {
  test('from the network settings: the CIDR, private subnets in maxAzs zones, natGateways NATs in /28 public subnets', () => {
    for (const [envName, t] of [['dev', dev], ['prod', prod]] as const) {
      const net = config.environments[envName].network;
      const vpcs = ofType(t, 'AWS::EC2::VPC');
      assert.equal(vpcs.length, 1, envName);
      assert.equal(vpcs[0][1].Properties.CidrBlock, net.vpcCidr);
      assert.equal(subnetsOf(t, 'Private').length, net.maxAzs, envName);
      const publics = subnetsOf(t, 'Public');
      assert.equal(publics.length, net.maxAzs, envName);
      for (const [, s] of publics) assert.match(s.Properties.CidrBlock, /\/28$/);
      assert.equal(ofType(t, 'AWS::EC2::NatGateway').length, net.natGateways, envName);
      // Every private subnet's default route leaves through a NAT gateway.
      const privateTables = new Set(ofType(t, 'AWS::EC2::SubnetRouteTableAssociation')
        .filter(([, a]) => subnetsOf(t, 'Private').some(([id]) => a.Properties.SubnetId.Ref === id))
        .map(([, a]) => a.Properties.RouteTableId.Ref));
      const defaults = ofType(t, 'AWS::EC2::Route').filter(([, r]) => privateTables.has(r.Properties.RouteTableId.Ref));
      assert.equal(defaults.length, net.maxAzs);
      for (const [, r] of defaults) {
        assert.equal(r.Properties.DestinationCidrBlock, '0.0.0.0/0');
        assert.ok(r.Properties.NatGatewayId, 'through a NAT gateway');
      }
    }
  });

  test('the NAT gateways\' public IPs are an output (for allow-listing at the providers)', () => {
    const eips = ofType(prod, 'AWS::EC2::EIP').map(([id]) => ({ Ref: id }));
    assert.equal(eips.length, config.environments.prod.network.natGateways);
    assert.deepEqual(prod.toJSON().Outputs.DispatcherEgressIps.Value, { 'Fn::Join': [',', eips] });
    assert.equal(isolated.template.toJSON().Outputs?.DispatcherEgressIps, undefined);
  });

  test('with natGateways 0: isolated subnets only, no internet gateway, no route out', () => {
    const t = isolated.template;
    assert.equal(subnetsOf(t, 'Public').length, 0);
    assert.equal(subnetsOf(t, 'Isolated').length, config.environments.staging.network.maxAzs);
    for (const type of ['AWS::EC2::NatGateway', 'AWS::EC2::InternetGateway', 'AWS::EC2::EIP', 'AWS::EC2::Route']) {
      assert.equal(ofType(t, type).length, 0, type);
    }
    // Traced functions still reach X-Ray, through its endpoint.
    assert.ok(ofType(t, 'AWS::EC2::VPCEndpoint').some(([, e]) => endpointService(e).includes('.xray')));
    assert.ok(!ofType(dev, 'AWS::EC2::VPCEndpoint').some(([, e]) => endpointService(e).includes('.xray')), 'not with a NAT');
  });

  test('flow logs of all traffic to a KMS-encrypted log group kept 365 days', () => {
    const logs = ofType(dev, 'AWS::EC2::FlowLog');
    assert.equal(logs.length, 1);
    const fl = logs[0][1].Properties;
    assert.equal(fl.TrafficType, 'ALL');
    assert.equal(fl.ResourceType, 'VPC');
    assert.equal(fl.LogDestinationType, 'cloud-watch-logs');
    const group = resourcesOf(dev, 'AWS::Logs::LogGroup')[fl.LogGroupName.Ref];
    assert.equal(group.Properties.RetentionInDays, 365);
    assert.deepEqual(group.Properties.KmsKeyId['Fn::GetAtt'][0].replace(/[A-F0-9]{8}$/, ''), 'DataKey');
  });

  test('no VPC at all when no provider uses the queue transport (no dispatcher)', () => {
    const direct = configWith((c) => {
      for (const p of Object.values<any>(c.providers)) p.transport = 'direct';
    });
    const t = build({ config: direct }).template;
    for (const type of ['AWS::EC2::VPC', 'AWS::EC2::VPCEndpoint', 'AWS::EC2::SecurityGroup', 'AWS::EC2::FlowLog']) {
      assert.equal(ofType(t, type).length, 0, type);
    }
  });
});

describe('security groups', () => {
  const groups = resourcesOf(dev, 'AWS::EC2::SecurityGroup');
  const dispatcherSg = Object.keys(groups).find((id) => id.startsWith('DispatcherSecurityGroup'))!;
  const endpointSg = Object.keys(groups).find((id) => id.startsWith('EndpointSecurityGroup'))!;

  test('the dispatcher\'s: HTTPS out only, nothing in', () => {
    const g = groups[dispatcherSg].Properties;
    assert.deepEqual(g.SecurityGroupEgress, [{ CidrIp: '0.0.0.0/0', Description: 'HTTPS', FromPort: 443, IpProtocol: 'tcp', ToPort: 443 }]);
    assert.equal(g.SecurityGroupIngress, undefined);
    assert.ok(!ofType(dev, 'AWS::EC2::SecurityGroupIngress').some(([, r]) => r.Properties.GroupId['Fn::GetAtt'][0] === dispatcherSg));
  });

  test('the endpoints\': HTTPS in from the dispatcher\'s group only, nothing out', () => {
    const g = groups[endpointSg].Properties;
    assert.equal(g.SecurityGroupIngress, undefined, 'no inline (CIDR) ingress');
    const ingress = ofType(dev, 'AWS::EC2::SecurityGroupIngress').filter(([, r]) => r.Properties.GroupId['Fn::GetAtt'][0] === endpointSg);
    assert.equal(ingress.length, 1);
    assert.deepEqual(ingress[0][1].Properties, {
      Description: 'HTTPS from the dispatcher', FromPort: 443, ToPort: 443, IpProtocol: 'tcp',
      GroupId: { 'Fn::GetAtt': [endpointSg, 'GroupId'] },
      SourceSecurityGroupId: { 'Fn::GetAtt': [dispatcherSg, 'GroupId'] },
    });
    // The CDK's stand-in for "no egress" (an impossible ICMP rule).
    assert.deepEqual(g.SecurityGroupEgress.map((r: any) => r.CidrIp), ['255.255.255.255/32']);
  });
});

describe('VPC endpoints', () => {
  const endpoints = ofType(dev, 'AWS::EC2::VPCEndpoint');
  const interfaces = endpoints.filter(([, e]) => e.Properties.VpcEndpointType === 'Interface');
  const privateSubnets = subnetsOf(dev, 'Private').map(([id]) => ({ Ref: id }));
  const accountCondition = { StringEquals: { 'aws:PrincipalAccount': { Ref: 'AWS::AccountId' } } };

  test('SQS, KMS, Secrets Manager and Bedrock runtime: interface endpoints with private DNS in the private subnets', () => {
    const services = interfaces.map(([, e]) => e.Properties.ServiceName).sort();
    assert.deepEqual(services, Object.keys(INTERFACE_ENDPOINTS).map((s) => `com.amazonaws.us-east-1.${s}`).sort());
    for (const [id, e] of interfaces) {
      assert.equal(e.Properties.PrivateDnsEnabled, true, id);
      assert.deepEqual(e.Properties.SubnetIds, privateSubnets, id);
      assert.deepEqual(e.Properties.SecurityGroupIds.map((g: any) => g['Fn::GetAtt'][0].replace(/[A-F0-9]{8}$/, '')), ['EndpointSecurityGroup'], id);
    }
  });

  test('every endpoint policy admits this account\'s principals only, on this account\'s queues, keys and secrets', () => {
    for (const [id, e] of endpoints) {
      for (const s of e.Properties.PolicyDocument.Statement) {
        assert.equal(s.Effect, 'Allow', id);
        assert.deepEqual(s.Condition, accountCondition, id);
      }
    }
    for (const service of ['sqs', 'kms', 'secretsmanager']) {
      const [, e] = interfaces.find(([, x]) => x.Properties.ServiceName.endsWith(`.${service}`))!;
      for (const s of e.Properties.PolicyDocument.Statement) {
        assert.match(JSON.stringify(s.Resource), new RegExp(`:${service}:".*\\{"Ref":"AWS::Region"\\},":",\\{"Ref":"AWS::AccountId"\\}`), service);
      }
    }
    const secrets = interfaces.find(([, x]) => x.Properties.ServiceName.endsWith('.secretsmanager'))![1];
    assert.deepEqual([...secrets.Properties.PolicyDocument.Statement[0].Action].sort(), ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue']);
  });

  test('S3 is a gateway endpoint on the private route tables, for the payload bucket only', () => {
    const gateways = endpoints.filter(([, e]) => e.Properties.VpcEndpointType === 'Gateway');
    assert.equal(gateways.length, 1);
    const s3 = gateways[0][1].Properties;
    assert.match(JSON.stringify(s3.ServiceName), /\.s3/);
    const privateTables = ofType(dev, 'AWS::EC2::SubnetRouteTableAssociation')
      .filter(([, a]) => privateSubnets.some((s) => s.Ref === a.Properties.SubnetId.Ref)).map(([, a]) => a.Properties.RouteTableId);
    assert.deepEqual(s3.RouteTableIds, privateTables);
    const resources = s3.PolicyDocument.Statement.flatMap((s: any) => list(s.Resource));
    assert.ok(resources.length > 0);
    for (const r of resources) assert.match(JSON.stringify(r), /^\{"Fn::(GetAtt|Join)":.*"PayloadBucket[A-F0-9]{8}","Arn"\]\}/);
    assert.ok(!JSON.stringify(s3.PolicyDocument).includes('AuditBucket'), 'the dispatcher writes audit events to the queue, not the bucket');
    const actions = s3.PolicyDocument.Statement.flatMap((s: any) => list<string>(s.Action)).sort();
    assert.deepEqual(actions, ['s3:GetObject', 's3:ListBucket', 's3:PutObject']);
  });

  test('every AWS SDK the dispatcher links has an endpoint (its code reaches no other AWS service)', () => {
    const repo = path.join(__dirname, '..', '..');
    const crates = ['functions/dispatcher/Cargo.toml', 'shared/Cargo.toml']
      // Optional dependencies of the shared crate are the identity functions' (its `identity` feature),
      // which the dispatcher does not enable.
      .flatMap((f) => [...readFileSync(path.join(repo, f), 'utf8').matchAll(/^aws-sdk-([a-z0-9]+)(?![^\n]*optional = true)/gm)].map((m) => m[1]));
    assert.ok(crates.includes('sqs') && crates.includes('s3'), crates.join());
    const served = new Set([...Object.keys(INTERFACE_ENDPOINTS), 's3']);
    for (const c of new Set(crates)) assert.ok(served.has(c), `aws-sdk-${c} has no endpoint`);
    // Bedrock is called with SigV4 over HTTPS (shared/src/upstream_auth.rs), not through an SDK crate.
    assert.ok(served.has('bedrock-runtime'));
  });
});

describe('the dispatcher in the VPC', () => {
  test('only the dispatcher runs in the VPC, in the private subnets with its own security group', () => {
    const fns = resourcesOf(dev, 'AWS::Lambda::Function');
    const inVpc = Object.entries(fns).filter(([, f]) => f.Properties.VpcConfig).map(([id]) => id);
    assert.deepEqual(inVpc, [functionId(dev, 'Dispatcher')]);
    const vpc = dispatcherOf(dev).Properties.VpcConfig;
    assert.deepEqual(vpc.SubnetIds, subnetsOf(dev, 'Private').map(([id]) => ({ Ref: id })));
    assert.equal(vpc.SecurityGroupIds.length, 1);
    assert.match(vpc.SecurityGroupIds[0]['Fn::GetAtt'][0], /^DispatcherSecurityGroup/);
  });

  test('its role has the network-interface permissions itself, without AWSLambdaVPCAccessExecutionRole', () => {
    const roleId = dispatcherOf(dev).Properties.Role['Fn::GetAtt'][0];
    const role = resourcesOf(dev, 'AWS::IAM::Role')[roleId];
    assert.equal(role.Properties.ManagedPolicyArns, undefined);
    const statements = statementsOf(dev, 'Dispatcher');
    const byAction = (a: string) => statements.filter((s) => list<string>(s.Action).includes(a));
    for (const a of ['ec2:CreateNetworkInterface', 'ec2:DeleteNetworkInterface', 'ec2:DescribeNetworkInterfaces',
      'ec2:DescribeSubnets', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses']) {
      assert.equal(byAction(a).length, 1, a);
    }
    const create = JSON.stringify(byAction('ec2:CreateNetworkInterface')[0].Resource);
    for (const [id] of subnetsOf(dev, 'Private')) assert.ok(create.includes(`":subnet/",{"Ref":"${id}"}`), create);
    assert.match(create, /:security-group\/",\{"Fn::GetAtt":\["DispatcherSecurityGroup/);
    assert.match(create, /:network-interface\/\*"/);
    assert.deepEqual(byAction('ec2:DescribeSubnets')[0].Resource, '*');
    assert.match(JSON.stringify(byAction('ec2:DeleteNetworkInterface')[0].Resource), /:network-interface\/\*"\]\]\}$/);
  });

  test('the function waits for its role\'s policy (Lambda checks the ENI permissions when it creates the function)', () => {
    const policyIds = Object.entries(resourcesOf(dev, 'AWS::IAM::Policy'))
      .filter(([, p]) => JSON.stringify(p.Properties.PolicyDocument).includes('ec2:CreateNetworkInterface')).map(([id]) => id);
    assert.equal(policyIds.length, 1);
    const fn = dev.toJSON().Resources[functionId(dev, 'Dispatcher')];
    assert.ok(fn.DependsOn.includes(policyIds[0]));
  });

  test('cdk-nag: no unsuppressed finding in the isolated variant', () => {
    const a = Annotations.fromStack(isolated.stack);
    const found = [...a.findError('*', Match.stringLikeRegexp('AwsSolutions-.*')), ...a.findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'))];
    assert.deepEqual(found.map((e) => `${e.id}: ${e.entry.data}`), []);
  });
});
