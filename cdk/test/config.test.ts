import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig, parseConfig } from '../lib/config';

const shipped = () => JSON.parse(JSON.stringify(loadConfig()));

test('the shipped configuration loads, with all three environments and providers', () => {
  const c = loadConfig();
  assert.deepEqual(Object.keys(c.environments).sort(), ['dev', 'prod', 'staging']);
  assert.deepEqual(Object.keys(c.providers).sort(), ['azure-openai', 'bedrock-claude', 'gemini']);
});

test('invalid configurations are refused with every problem named', () => {
  const c = shipped();
  c.providers.gemini.transport = 'carrier-pigeon';
  c.environments.prod.allowedIps = ['10.0.0.0/33'];
  c.environments.dev.callbackUrls = ['http://example.com/cb'];
  c.environments.staging.extra = 1;
  delete c.providers['azure-openai'].endpoint;
  c.functions.auditDigestGraceSecs = 100;
  assert.throws(() => parseConfig(c), (e: Error) => {
    for (const part of [
      'config.providers.gemini.transport: must be one of direct, queue',
      'config.environments.prod.allowedIps[0]: must be an IPv4 CIDR',
      'config.environments.dev.callbackUrls[0]: must be an https URL',
      'config.environments.staging.extra: unknown key',
      'config.providers.azure-openai.endpoint: missing',
      'config.functions.auditDigestGraceSecs: must be longer than twice auditWriterTimeoutSecs',
    ]) assert.ok(e.message.includes(part), `${part} not in\n${e.message}`);
    return true;
  });
});

test('an unknown environment or provider is refused', () => {
  const c = shipped();
  c.environments.qa = c.environments.dev;
  c.providers.openai = { transport: 'direct', endpoint: 'https://x.example.com' };
  assert.throws(() => parseConfig(c), /environments\.qa: unknown key[\s\S]*providers\.openai: unknown key/);
});

test('api, network, identity and operations settings are checked', () => {
  const c = shipped();
  c.environments.dev.api.endpointType = 'private';
  c.environments.staging.api.domain.certificateArns['us-east-1'] = 'arn:aws:acm:us-west-2:123456789012:certificate/00000000-0000-4000-8000-000000000000';
  delete c.environments.prod.api.domain.certificateArns['ap-northeast-1'];
  c.environments.dev.network.vpcCidr = '10.0.0.0/8';
  c.environments.staging.network.natGateways = 3;
  c.environments.dev.identity.sesIdentity = 'example.com';
  c.environments.staging.identity.sesFromAddress = 'someone@elsewhere.org';
  c.environments.dev.identity.cognitoDomainPrefix = 'my-cognito-login';
  c.environments.dev.operations.cloudTrailDataEvents = true;
  c.environments.dev.operations.cloudTrail = false;
  assert.throws(() => parseConfig(c), (e: Error) => {
    for (const part of [
      'config.environments.dev.api.vpcEndpointIds: must name at least one execute-api endpoint',
      'config.environments.staging.api.domain.certificateArns.us-east-1: must be an ACM certificate ARN in us-east-1',
      'config.environments.prod.api.domain.certificateArns.ap-northeast-1: missing',
      'config.environments.dev.network.vpcCidr: must be an IPv4 CIDR from /16 to /24',
      'config.environments.staging.network.natGateways: must not exceed maxAzs',
      'config.environments.dev.identity.sesFromAddress: must be set exactly when sesIdentity is',
      'config.environments.staging.identity.sesFromAddress: must be an address of the SES identity',
      'config.environments.dev.identity.cognitoDomainPrefix: must be null or lower-case',
      'config.environments.dev.operations.cloudTrailDataEvents: needs cloudTrail',
    ]) assert.ok(e.message.includes(part), `${part} not in\n${e.message}`);
    return true;
  });
});

test('a private API with a custom domain is refused (private custom domain names are not built)', () => {
  const c = shipped();
  c.environments.prod.api.endpointType = 'private';
  c.environments.prod.api.vpcEndpointIds = ['vpce-0123456789abcdef0'];
  assert.throws(() => parseConfig(c), /config\.environments\.prod\.api\.domain: must be null for a private API/);
  c.environments.prod.api.domain = null;
  assert.doesNotThrow(() => parseConfig(c));
});

test('a name HR files use picks one department', () => {
  const c = shipped();
  c.departments.sales.names.push('システム部');
  c.departments.hr.names.push('=HYPERLINK("x")');
  assert.throws(() => parseConfig(c), (e: Error) => {
    assert.ok(e.message.includes('config.departments.sales.names: "システム部" also names department engineering'), e.message);
    assert.ok(e.message.includes('config.departments.hr.names[2]: must be a name'), e.message);
    return true;
  });
});

test('a provider region is a region name, and Bedrock takes none (it is called in the stack\'s region)', () => {
  const c = shipped();
  c.providers['azure-openai'].region = 'Japan East';
  c.providers['bedrock-claude'].region = 'us-east-1';
  assert.throws(() => parseConfig(c), (e: Error) => {
    for (const part of [
      'config.providers.azure-openai.region: must be a region name',
      'config.providers.bedrock-claude.region: unknown key',
    ]) assert.ok(e.message.includes(part), `${part} not in\n${e.message}`);
    return true;
  });
  const good = shipped();
  good.providers['azure-openai'].region = 'japaneast';
  good.providers.gemini.region = 'europe-west4';
  assert.equal(parseConfig(good).providers['azure-openai'].region, 'japaneast');
});
