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
