import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { CfnElement } from 'aws-cdk-lib';
import { Annotations, Match, Template } from 'aws-cdk-lib/assertions';
import { ADMIN_API, ApiName, accessLogFormat, STREAM_INTEGRATION_TIMEOUT } from '../lib/api';
import { GatewayConfig, PROVIDERS, ProviderName, loadConfig, parseConfig } from '../lib/config';
import { pascal } from '../lib/names';
import {
  ADMIN_CODE_STATUS, ADMIN_GATEWAY_ERRORS, ErrorKind, GATEWAY_ERRORS, KIND_STATUS, PROVIDER_ERRORS, REQUEST_ID_VARIABLE,
  UNAUTHORIZED_MESSAGE, withRequestId,
} from '../lib/provider-errors';
import { build, envOf, functionId, list, resourcesOf, statementsOf } from './helpers';

const config = loadConfig();
const copy = (): GatewayConfig => JSON.parse(JSON.stringify(config));
const dev = build();

const VPCE = 'vpce-0123456789abcdef0';
const HOSTED_ZONE = 'Z0123456789ABCDEFGHIJ';
/** dev with the staging custom domain and a hosted zone. */
function domainConfig(): GatewayConfig {
  const c = copy();
  c.environments.dev.api.domain = { ...config.environments.staging.api.domain!, hostedZoneId: HOSTED_ZONE };
  return parseConfig(c);
}
function privateConfig(): GatewayConfig {
  const c = copy();
  c.environments.dev.api.endpointType = 'private';
  c.environments.dev.api.vpcEndpointIds = [VPCE];
  return parseConfig(c);
}
const withDomain = build({ config: domainConfig(), region: 'us-west-2' });
const priv = build({ config: privateConfig() });

// ---- template helpers

/** Every API the stack serves: the providers' and the admin API. */
const APIS: ApiName[] = [...PROVIDERS, ADMIN_API];

function apiId(t: Template, p: ApiName, env = 'dev'): string {
  const found = Object.entries(resourcesOf(t, 'AWS::ApiGateway::RestApi'))
    .filter(([, r]) => r.Properties.Name === `${config.project}-${env}-${p}`);
  assert.equal(found.length, 1, p);
  return found[0][0];
}
function ofApi(t: Template, type: string, api: string) {
  return Object.entries(resourcesOf(t, type)).filter(([, r]) => r.Properties.RestApiId?.Ref === api);
}
function stageIds(t: Template): string[] {
  return Object.keys(resourcesOf(t, 'AWS::ApiGateway::Stage'));
}
/** The provider APIs' stages (the usage plans' scope; the admin API has none). */
function providerStageIds(t: Template): string[] {
  const providerApis = PROVIDERS.map((p) => apiId(t, p));
  return Object.entries(resourcesOf(t, 'AWS::ApiGateway::Stage'))
    .filter(([, s]) => providerApis.includes(s.Properties.RestApiId.Ref)).map(([id]) => id);
}
/** Every string in the template, for scans. */
function strings(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => strings(x, out));
  else if (v && typeof v === 'object') Object.values(v).forEach((x) => strings(x, out));
  return out;
}

// ---- the Rust sources the error shapes come from

const shared = path.join(__dirname, '..', '..', 'shared', 'src');
const rust = (file: string) => readFileSync(path.join(shared, file), 'utf8');
const PROVIDER_FILES: Record<ProviderName, string> = {
  'azure-openai': 'providers/azure_openai.rs',
  'bedrock-claude': 'providers/bedrock.rs',
  gemini: 'providers/gemini.rs',
};
const HTTP_STATUS: Record<string, number> = {
  BAD_REQUEST: 400, UNAUTHORIZED: 401, FORBIDDEN: 403, NOT_FOUND: 404, PAYLOAD_TOO_LARGE: 413,
  TOO_MANY_REQUESTS: 429, INTERNAL_SERVER_ERROR: 500, BAD_GATEWAY: 502, GATEWAY_TIMEOUT: 504,
};

/** The text of the first `fn <name>` body (balanced braces). */
function rustFn(source: string, name: string): string {
  const start = source.indexOf(`fn ${name}`);
  assert.ok(start >= 0, `fn ${name}`);
  return balanced(source, source.indexOf('{', start), '{', '}');
}
function balanced(source: string, open: number, l: string, r: string): string {
  let depth = 0;
  for (let i = open; i < source.length; i++) {
    if (source[i] === l) depth++;
    else if (source[i] === r && --depth === 0) return source.slice(open, i + 1);
  }
  throw new Error('unbalanced');
}
/** `ErrorKind::A | ErrorKind::B => <value>,` arms of a match. */
function matchArms(body: string, value: RegExp): Record<string, string> {
  const arms: Record<string, string> = {};
  const re = new RegExp(`((?:ErrorKind::\\w+\\s*\\|?\\s*)+)=>\\s*${value.source}`, 'g');
  for (const m of body.matchAll(re)) {
    for (const k of m[1].matchAll(/ErrorKind::(\w+)/g)) arms[k[1]] = m[2];
  }
  return arms;
}
/**
 * The `json!({...})` value of a function as JSON, each Rust expression (not a literal) replaced by the
 * string `<expr:...>`.
 */
function rustJson(body: string): unknown {
  const at = body.indexOf('json!(');
  const text = balanced(body, body.indexOf('{', at), '{', '}').replace(/\/\/[^\n]*/g, '');
  let out = '';
  let i = 0;
  while (i < text.length) {
    out += text[i];
    const afterKey = text[i] === ':' && /"\s*:$/.test(out);
    i++;
    if (!afterKey) continue;
    while (/\s/.test(text[i])) i++;
    if (/["{\[\d]/.test(text[i]) || text.startsWith('null', i)) continue;
    // An expression: up to the next `,` or `}` outside parentheses.
    let depth = 0;
    let end = i;
    for (; end < text.length; end++) {
      const ch = text[end];
      if ('([{'.includes(ch)) depth++;
      else if (')]}'.includes(ch) && depth-- === 0) break;
      else if (ch === ',' && depth === 0) break;
    }
    out += ` ${JSON.stringify(`<expr:${text.slice(i, end).trim()}>`)}`;
    i = end;
  }
  return JSON.parse(out.replace(/,(\s*[}\]])/g, '$1'));
}

describe('provider error shapes match the Rust code', () => {
  test('kinds and their statuses (shared/src/error.rs)', () => {
    const arms = matchArms(rustFn(rust('error.rs'), 'status'), /StatusCode::(\w+)/);
    const statuses = Object.fromEntries(Object.entries(arms).map(([k, v]) => [k, HTTP_STATUS[v]]));
    assert.deepEqual(statuses, KIND_STATUS);
  });
  test('the authentication failure message and the request id suffix', () => {
    assert.ok(rust('error.rs').replace(/\s+/g, ' ').includes(JSON.stringify(UNAUTHORIZED_MESSAGE)));
    const format = /fn with_request_id[^{]*\{\s*format!\("([^"]*)"/.exec(rust('providers/mod.rs'))![1];
    assert.equal(withRequestId('M', 'R'), format.replace('{message}', 'M').replace('{request_id}', 'R'));
  });
  for (const p of PROVIDERS) {
    test(`${p}: codes, body and headers as error_body renders them`, () => {
      const source = rust(PROVIDER_FILES[p]);
      const body = rustFn(source, 'error_body');
      const codes = matchArms(body, /"(\w+)"/);
      assert.deepEqual(codes, PROVIDER_ERRORS[p].codes);
      const shape = rustJson(body);
      for (const kind of Object.keys(KIND_STATUS) as ErrorKind[]) {
        const expected = substitute(shape, (expr) => {
          if (expr === 'with_request_id(message, request_id)') return withRequestId('M', 'R');
          if (expr === 'request_id') return 'R';
          if (expr === 'kind.status().as_u16()') return KIND_STATUS[kind];
          if (/^\w+$/.test(expr)) return codes[kind]; // the match's binding (code, status)
          throw new Error(`${p}: unknown expression ${expr}`);
        });
        const rendered = PROVIDER_ERRORS[p].render(kind, 'M', 'R');
        assert.deepEqual(rendered.body, expected, `${p} ${kind}`);
        // Headers: the ones the Rust code adds, except the request id API Gateway sets itself.
        const rustHeaders = [...body.matchAll(/\((\w+),\s*HeaderValue::from_static\((\w+)\)\)/g)].map((m) => {
          const name = new RegExp(`const ${m[1]}: HeaderName = HeaderName::from_static\\("([^"]+)"\\)`).exec(source)![1];
          return [name, codes[kind]];
        });
        assert.deepEqual(Object.entries(rendered.headers).map(([n, v]) => [n.toLowerCase(), v]), rustHeaders, `${p} ${kind} headers`);
      }
    });
  }
});

function substitute(v: unknown, f: (expr: string) => unknown): unknown {
  if (typeof v === 'string' && v.startsWith('<expr:')) return f(v.slice(6, -1));
  if (Array.isArray(v)) return v.map((x) => substitute(x, f));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, substitute(x, f)]));
  return v;
}

describe('gateway responses', () => {
  const { template } = dev;
  const required = ['UNAUTHORIZED', 'ACCESS_DENIED', 'THROTTLED', 'QUOTA_EXCEEDED', 'DEFAULT_4XX', 'DEFAULT_5XX',
    'INTEGRATION_TIMEOUT', 'INTEGRATION_FAILURE', 'REQUEST_TOO_LARGE', 'WAF_FILTERED', 'INVALID_API_KEY',
    'AUTHORIZER_FAILURE', 'MISSING_AUTHENTICATION_TOKEN'];
  for (const p of PROVIDERS) {
    test(`${p}: every response type in the provider's shape, valid JSON with the request id`, () => {
      const responses = ofApi(template, 'AWS::ApiGateway::GatewayResponse', apiId(template, p)).map(([, r]) => r.Properties);
      const types = responses.map((r) => r.ResponseType);
      assert.deepEqual([...types].sort(), GATEWAY_ERRORS.map((s) => s.type).sort());
      for (const t of required) assert.ok(types.includes(t), t);
      for (const r of responses) {
        const spec = GATEWAY_ERRORS.find((s) => s.type === r.ResponseType)!;
        assert.equal(r.StatusCode, String(KIND_STATUS[spec.kind]), r.ResponseType);
        const template_ = r.ResponseTemplates['application/json'];
        // The request id is the only variable: nothing from the request is echoed.
        assert.deepEqual([...new Set([...template_.matchAll(/\$[A-Za-z][\w.]*\w/g)].map((m) => m[0]))], [REQUEST_ID_VARIABLE], r.ResponseType);
        const body = JSON.parse(template_.split(REQUEST_ID_VARIABLE).join('3f1c2a9e-0000-4000-8000-000000000001'));
        const expected = PROVIDER_ERRORS[p].render(spec.kind, spec.message, '3f1c2a9e-0000-4000-8000-000000000001');
        assert.deepEqual(body, expected.body, r.ResponseType);
        const headers = Object.fromEntries(Object.entries(expected.headers).map(([n, v]) => [`gatewayresponse.header.${n}`, `'${v}'`]));
        assert.deepEqual(r.ResponseParameters ?? {}, headers, r.ResponseType);
      }
    });
  }
  test('SDK-facing details: Bedrock names the exception, Gemini carries the status, Azure the request id', () => {
    const of = (p: ProviderName, type: string) => ofApi(template, 'AWS::ApiGateway::GatewayResponse', apiId(template, p))
      .map(([, r]) => r.Properties).find((r) => r.ResponseType === type)!;
    assert.equal(of('bedrock-claude', 'THROTTLED').ResponseParameters['gatewayresponse.header.x-amzn-ErrorType'], '\'ThrottlingException\'');
    assert.equal(of('bedrock-claude', 'ACCESS_DENIED').ResponseParameters['gatewayresponse.header.x-amzn-ErrorType'], '\'AccessDeniedException\'');
    const gem = JSON.parse(of('gemini', 'QUOTA_EXCEEDED').ResponseTemplates['application/json']);
    assert.deepEqual([gem.error.code, gem.error.status], [429, 'RESOURCE_EXHAUSTED']);
    const az = JSON.parse(of('azure-openai', 'UNAUTHORIZED').ResponseTemplates['application/json']);
    assert.deepEqual([az.error.code, az.error.request_id], ['Unauthorized', REQUEST_ID_VARIABLE]);
    assert.equal(az.error.message, withRequestId(UNAUTHORIZED_MESSAGE, REQUEST_ID_VARIABLE));
  });
});

describe('admin API gateway responses', () => {
  const { template } = dev;
  const requestId = '3f1c2a9e-0000-4000-8000-000000000001';
  test('the same response types as the provider APIs, each in the admin shape {"error": {"code", "message"}}', () => {
    assert.deepEqual(ADMIN_GATEWAY_ERRORS.map((s) => s.type).sort(), GATEWAY_ERRORS.map((s) => s.type).sort());
    const responses = ofApi(template, 'AWS::ApiGateway::GatewayResponse', apiId(template, ADMIN_API)).map(([, r]) => r.Properties);
    assert.deepEqual(responses.map((r) => r.ResponseType).sort(), GATEWAY_ERRORS.map((s) => s.type).sort());
    for (const r of responses) {
      const spec = ADMIN_GATEWAY_ERRORS.find((s) => s.type === r.ResponseType)!;
      assert.equal(r.StatusCode, String(spec.status), r.ResponseType);
      assert.equal(r.ResponseParameters, undefined, `${r.ResponseType}: no extra header`);
      const text = r.ResponseTemplates['application/json'];
      assert.deepEqual([...new Set([...text.matchAll(/\$[A-Za-z][\w.]*\w/g)].map((m) => m[0]))], [REQUEST_ID_VARIABLE], r.ResponseType);
      const body = JSON.parse(text.split(REQUEST_ID_VARIABLE).join(requestId));
      assert.deepEqual(Object.keys(body), ['error'], r.ResponseType);
      assert.deepEqual(Object.keys(body.error), ['code', 'message'], r.ResponseType);
      assert.equal(body.error.code, spec.code, r.ResponseType);
      assert.equal(body.error.message, withRequestId(spec.message, requestId), r.ResponseType);
    }
  });
  test('codes and statuses as the contract has them: 5xx are `internal`; statuses agree with the provider APIs\'', () => {
    const byType = Object.fromEntries(ADMIN_GATEWAY_ERRORS.map((s) => [s.type, [s.status, s.code]]));
    assert.deepEqual(byType.UNAUTHORIZED, [401, 'unauthorized']);
    assert.deepEqual(byType.ACCESS_DENIED, [403, 'forbidden']);
    assert.deepEqual(byType.WAF_FILTERED, [403, 'forbidden']);
    assert.deepEqual(byType.THROTTLED, [429, 'throttled']);
    assert.deepEqual(byType.QUOTA_EXCEEDED, [429, 'throttled']);
    assert.deepEqual(byType.REQUEST_TOO_LARGE, [413, 'payload_too_large']);
    assert.deepEqual(byType.DEFAULT_4XX, [400, 'bad_request']);
    assert.deepEqual(byType.MISSING_AUTHENTICATION_TOKEN, [404, 'not_found']);
    assert.deepEqual(byType.UNSUPPORTED_MEDIA_TYPE, [415, 'unsupported_media_type']);
    assert.deepEqual(byType.DEFAULT_5XX, [500, 'internal']);
    assert.deepEqual(byType.INTEGRATION_TIMEOUT, [504, 'internal']);
    for (const spec of ADMIN_GATEWAY_ERRORS) {
      if (spec.status >= 500) assert.equal(spec.code, 'internal', spec.type);
      else assert.equal(spec.status, ADMIN_CODE_STATUS[spec.code], spec.type);
      // The provider APIs answer 400 for 415 (no 415 kind there); otherwise the same status.
      const kind = GATEWAY_ERRORS.find((g) => g.type === spec.type)!.kind;
      if (spec.type !== 'UNSUPPORTED_MEDIA_TYPE') assert.equal(spec.status, KIND_STATUS[kind], spec.type);
    }
  });
  const adminSources = path.join(__dirname, '..', '..', 'functions', 'admin-api', 'src');
  test('every code the function answers with is a code of functions/admin-api', { skip: !existsSync(adminSources) && 'functions/admin-api not there yet' }, () => {
    const source = readdirSync(adminSources, { recursive: true }).map(String).filter((f) => f.endsWith('.rs'))
      .map((f) => readFileSync(path.join(adminSources, f), 'utf8')).join('\n');
    // `throttled` is API Gateway's and WAF's alone: the function never throttles.
    for (const code of Object.keys(ADMIN_CODE_STATUS).filter((c) => c !== 'throttled')) {
      assert.ok(source.includes(`"${code}"`), code);
    }
  });
});

describe('the admin API', () => {
  const { template } = dev;
  const admin = apiId(template, ADMIN_API);
  test('/admin/{proxy+} on its execute-api URL, as the local stack serves it; nothing else', () => {
    const resources = ofApi(template, 'AWS::ApiGateway::Resource', admin);
    assert.deepEqual(resources.map(([, r]) => r.Properties.PathPart).sort(), ['admin', '{proxy+}'].sort());
    const prefix = resources.find(([, r]) => r.Properties.PathPart === 'admin')!;
    assert.deepEqual(prefix[1].Properties.ParentId, { 'Fn::GetAtt': [admin, 'RootResourceId'] });
    const proxy = resources.find(([, r]) => r.Properties.PathPart === '{proxy+}')!;
    assert.deepEqual(proxy[1].Properties.ParentId, { Ref: prefix[0] });
    const methods = ofApi(template, 'AWS::ApiGateway::Method', admin);
    assert.equal(methods.length, 1);
    assert.deepEqual(methods[0][1].Properties.ResourceId, { Ref: proxy[0] });
  });
  test('ANY: a buffered Lambda proxy to admin-api (29 s), the same REQUEST authorizer, no API key', () => {
    const [[, method]] = ofApi(template, 'AWS::ApiGateway::Method', admin);
    const m = method.Properties;
    assert.equal(m.HttpMethod, 'ANY');
    assert.equal(m.AuthorizationType, 'CUSTOM');
    assert.notEqual(m.ApiKeyRequired, true);
    const [[authorizerId, authorizer]] = ofApi(template, 'AWS::ApiGateway::Authorizer', admin);
    assert.deepEqual(m.AuthorizerId, { Ref: authorizerId });
    assert.equal(authorizer.Properties.Type, 'REQUEST');
    assert.equal(authorizer.Properties.AuthorizerResultTtlInSeconds, 0);
    assert.ok(!('IdentitySource' in authorizer.Properties));
    assert.ok(JSON.stringify(authorizer.Properties.AuthorizerUri).includes(`"${functionId(template, 'Authorizer')}","Arn"`));
    assert.equal(m.Integration.Type, 'AWS_PROXY');
    assert.notEqual(m.Integration.ResponseTransferMode, 'STREAM');
    assert.equal(m.Integration.TimeoutInMillis, 29_000);
    const uri = JSON.stringify(m.Integration.Uri);
    assert.match(uri, /lambda:path\/2015-03-31\/functions\/.*\/invocations/);
    assert.ok(uri.includes(`"${functionId(template, 'AdminApi')}","Arn"`), uri);
    const fn = resourcesOf(template, 'AWS::Lambda::Function')[functionId(template, 'AdminApi')].Properties;
    assert.equal(fn.Timeout, 29);
    assert.deepEqual(fn.Architectures, ['arm64']);
  });
  test('admin-api is invocable by the admin API\'s method only, with no console test-invoke', () => {
    const permissions = Object.values(resourcesOf(template, 'AWS::Lambda::Permission'))
      .filter((x) => x.Properties.FunctionName['Fn::GetAtt']?.[0] === functionId(template, 'AdminApi'));
    assert.equal(permissions.length, 1);
    const source = JSON.stringify(permissions[0].Properties.SourceArn);
    assert.ok(source.includes(admin) && !source.includes('test-invoke-stage'), source);
  });
  test('no usage plan, bodies passed through as the providers\' are, the stage\'s access log line says admin', () => {
    const api = resourcesOf(template, 'AWS::ApiGateway::RestApi')[admin].Properties;
    assert.equal(api.ApiKeySourceType, undefined);
    assert.deepEqual(api.BinaryMediaTypes, ['*/*']);
    assert.deepEqual(api.EndpointConfiguration, { Types: ['REGIONAL'] });
    for (const plan of Object.values(resourcesOf(template, 'AWS::ApiGateway::UsagePlan'))) {
      assert.ok(!JSON.stringify(plan.Properties.ApiStages).includes(`"${admin}"`));
    }
    const stage = Object.values(resourcesOf(template, 'AWS::ApiGateway::Stage')).find((s) => s.Properties.RestApiId.Ref === admin)!;
    assert.equal(JSON.parse(stage.Properties.AccessLogSetting.Format).provider, 'admin');
  });
  test('behind the same web ACL as the provider APIs', () => {
    const stageId = Object.entries(resourcesOf(template, 'AWS::ApiGateway::Stage')).find(([, s]) => s.Properties.RestApiId.Ref === admin)![0];
    const associations = Object.values(resourcesOf(template, 'AWS::WAFv2::WebACLAssociation')).map((a) => a.Properties);
    assert.equal(associations.length, APIS.length);
    const acls = new Set(associations.map((a) => JSON.stringify(a.WebACLArn)));
    assert.equal(acls.size, 1);
    assert.ok(associations.some((a) => JSON.stringify(a.ResourceArn).includes(`"${stageId}"`)), 'the admin stage is associated');
  });
  test('its URL: execute-api, the stage and /admin; the domain\'s /admin behind a custom domain', () => {
    const url = JSON.stringify(template.toJSON().Outputs.ApiUrlAdmin.Value);
    assert.ok(url.includes(admin) && url.includes('/admin"') && url.includes('.execute-api.'), url);
    const domain = domainConfig().environments.dev.api.domain!;
    assert.equal(withDomain.template.toJSON().Outputs.ApiUrlAdmin.Value, `https://${domain.name}/admin`);
  });
});

describe('APIs without a custom domain (dev)', () => {
  const { template } = dev;
  test('one regional API per provider: binary pass-through, keys from the authorizer, execute-api open', () => {
    assert.equal(Object.keys(resourcesOf(template, 'AWS::ApiGateway::RestApi')).length, APIS.length);
    for (const p of PROVIDERS) {
      const api = resourcesOf(template, 'AWS::ApiGateway::RestApi')[apiId(template, p)].Properties;
      assert.deepEqual(api.EndpointConfiguration, { Types: ['REGIONAL'] });
      assert.deepEqual(api.BinaryMediaTypes, ['*/*']);
      assert.equal(api.ApiKeySourceType, 'AUTHORIZER');
      assert.notEqual(api.DisableExecuteApiEndpoint, true);
      assert.equal(api.Policy, undefined);
    }
    assert.deepEqual(resourcesOf(template, 'AWS::ApiGateway::DomainName'), {});
    assert.deepEqual(resourcesOf(template, 'AWS::ApiGateway::BasePathMapping'), {});
  });
  test('each API serves /<provider>/{proxy+}, as the local stack does, and nothing at its root', () => {
    for (const p of PROVIDERS) {
      const api = apiId(template, p);
      const resources = ofApi(template, 'AWS::ApiGateway::Resource', api);
      const prefix = resources.find(([, r]) => r.Properties.PathPart === p)!;
      assert.deepEqual(prefix[1].Properties.ParentId, { 'Fn::GetAtt': [api, 'RootResourceId'] });
      const proxy = resources.find(([, r]) => r.Properties.PathPart === '{proxy+}')!;
      assert.deepEqual(proxy[1].Properties.ParentId, { Ref: prefix[0] });
      assert.equal(resources.length, 2);
      const methods = ofApi(template, 'AWS::ApiGateway::Method', api);
      assert.equal(methods.length, 1);
      assert.deepEqual(methods[0][1].Properties.ResourceId, { Ref: proxy[0] });
    }
  });
  test('ANY: the provider\'s route function, streamed, 15-minute timeout, authorizer, API key required', () => {
    assert.equal(STREAM_INTEGRATION_TIMEOUT.toSeconds(), 900);
    for (const p of PROVIDERS) {
      const [[, method]] = ofApi(template, 'AWS::ApiGateway::Method', apiId(template, p));
      const m = method.Properties;
      assert.equal(m.HttpMethod, 'ANY');
      assert.equal(m.AuthorizationType, 'CUSTOM');
      assert.equal(m.ApiKeyRequired, true);
      const [[authorizerId]] = ofApi(template, 'AWS::ApiGateway::Authorizer', apiId(template, p));
      assert.deepEqual(m.AuthorizerId, { Ref: authorizerId });
      assert.equal(m.Integration.Type, 'AWS_PROXY');
      assert.equal(m.Integration.ResponseTransferMode, 'STREAM');
      assert.equal(m.Integration.TimeoutInMillis, 900_000);
      const uri = JSON.stringify(m.Integration.Uri);
      assert.match(uri, /lambda:path\/2021-11-15\/functions\/.*\/response-streaming-invocations/);
      assert.ok(uri.includes(`"${functionId(template, pascal(p))}","Arn"`), `${p} -> its route function`);
    }
  });
  test('the REQUEST authorizer: no identity source, no caching, invocable by each API only', () => {
    const authorizers = resourcesOf(template, 'AWS::ApiGateway::Authorizer');
    assert.equal(Object.keys(authorizers).length, APIS.length);
    const authorizerFn = functionId(template, 'Authorizer');
    for (const a of Object.values(authorizers)) {
      assert.equal(a.Properties.Type, 'REQUEST');
      assert.equal(a.Properties.AuthorizerResultTtlInSeconds, 0);
      assert.ok(!('IdentitySource' in a.Properties), 'no identity source (not even an empty one)');
      assert.ok(JSON.stringify(a.Properties.AuthorizerUri).includes(`"${authorizerFn}","Arn"`));
    }
    const permissions = Object.values(resourcesOf(template, 'AWS::Lambda::Permission'))
      .filter((x) => x.Properties.FunctionName['Fn::GetAtt']?.[0] === authorizerFn);
    assert.equal(permissions.length, APIS.length);
    for (const x of permissions) {
      assert.equal(x.Properties.Principal, 'apigateway.amazonaws.com');
      assert.match(JSON.stringify(x.Properties.SourceArn), /\/authorizers\//);
    }
  });
  test('routes are invocable by their own API\'s method only, with no console test-invoke', () => {
    for (const p of PROVIDERS) {
      const permissions = Object.values(resourcesOf(template, 'AWS::Lambda::Permission'))
        .filter((x) => x.Properties.FunctionName['Fn::GetAtt']?.[0] === functionId(template, pascal(p)));
      assert.equal(permissions.length, 1, p);
      const source = JSON.stringify(permissions[0].Properties.SourceArn);
      assert.ok(source.includes(apiId(template, p)) && !source.includes('test-invoke-stage'), source);
    }
  });
  test('the invoke URLs serve /<provider> below the stage', () => {
    const outputs = template.toJSON().Outputs;
    for (const p of PROVIDERS) {
      const url = JSON.stringify(outputs[`ApiUrl${pascal(p)}`].Value);
      assert.ok(url.includes(apiId(template, p)) && url.includes(`/${p}"`) && url.includes('.execute-api.'), url);
    }
  });
});

describe('APIs behind a custom domain', () => {
  const { template } = withDomain;
  const domain = domainConfig().environments.dev.api.domain!;
  test('one regional domain, TLS 1.2, this region\'s certificate; a base path per provider', () => {
    const domains = Object.entries(resourcesOf(template, 'AWS::ApiGateway::DomainName'));
    assert.equal(domains.length, 1);
    const [domainId, d] = domains[0];
    assert.deepEqual(d.Properties, {
      DomainName: domain.name,
      EndpointConfiguration: { Types: ['REGIONAL'] },
      RegionalCertificateArn: domain.certificateArns['us-west-2'],
      SecurityPolicy: 'TLS_1_2',
    });
    const mappings = Object.values(resourcesOf(template, 'AWS::ApiGateway::BasePathMapping')).map((m) => m.Properties);
    assert.deepEqual(mappings.map((m) => m.BasePath).sort(), [...APIS].sort());
    for (const m of mappings) {
      assert.deepEqual(m.DomainName, { Ref: domainId });
      assert.deepEqual(m.RestApiId, { Ref: apiId(template, m.BasePath) });
      assert.ok(stageIds(template).includes(m.Stage.Ref));
    }
  });
  test('the proxy sits at the root (API Gateway passes the base path in event.path); execute-api is off', () => {
    for (const p of APIS) {
      const api = apiId(template, p);
      const resources = ofApi(template, 'AWS::ApiGateway::Resource', api);
      assert.deepEqual(resources.map(([, r]) => [r.Properties.PathPart, r.Properties.ParentId]),
        [['{proxy+}', { 'Fn::GetAtt': [api, 'RootResourceId'] }]]);
      assert.equal(resourcesOf(template, 'AWS::ApiGateway::RestApi')[api].Properties.DisableExecuteApiEndpoint, true);
    }
  });
  test('a latency-based alias per region in the hosted zone', () => {
    template.hasResourceProperties('AWS::Route53::RecordSet', {
      Name: `${domain.name}.`,
      Type: 'A',
      HostedZoneId: HOSTED_ZONE,
      Region: 'us-west-2',
      SetIdentifier: 'llm-gateway-dev-us-west-2',
      AliasTarget: Match.objectLike({ DNSName: Match.anyValue() }),
    });
  });
  test('the URLs are the domain\'s', () => {
    const outputs = template.toJSON().Outputs;
    for (const p of APIS) assert.equal(outputs[`ApiUrl${pascal(p)}`].Value, `https://${domain.name}/${p}`);
    assert.ok(!Object.keys(outputs).some((k) => /Endpoint/.test(k)), 'no execute-api URL output');
  });
  test('staging and prod use their own domain; no alias without a hosted zone', () => {
    const { template: staging } = build({ envName: 'staging', region: 'ap-northeast-1' });
    staging.hasResourceProperties('AWS::ApiGateway::DomainName', {
      DomainName: config.environments.staging.api.domain!.name,
      RegionalCertificateArn: config.environments.staging.api.domain!.certificateArns['ap-northeast-1'],
    });
    assert.deepEqual(resourcesOf(staging, 'AWS::Route53::RecordSet'), {});
  });
  test('cdk-nag: no unsuppressed finding', () => {
    const a = Annotations.fromStack(withDomain.stack);
    assert.deepEqual([...a.findError('*', Match.stringLikeRegexp('AwsSolutions-.*')),
      ...a.findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'))].map((e) => `${e.id}: ${e.entry.data}`), []);
  });
});

describe('private APIs', () => {
  const { template } = priv;
  test('PRIVATE, reachable through the listed execute-api endpoints only', () => {
    for (const p of APIS) {
      const api = resourcesOf(template, 'AWS::ApiGateway::RestApi')[apiId(template, p)].Properties;
      assert.deepEqual(api.EndpointConfiguration, { Types: ['PRIVATE'], VpcEndpointIds: [VPCE] });
      const statements = api.Policy.Statement;
      assert.deepEqual(statements.map((s: any) => [s.Effect, s.Action, s.Resource, s.Principal]), [
        ['Allow', 'execute-api:Invoke', 'execute-api:/*', { AWS: '*' }],
        ['Deny', 'execute-api:Invoke', 'execute-api:/*', { AWS: '*' }],
      ]);
      assert.deepEqual(statements[0].Condition, { StringEquals: { 'aws:SourceVpce': [VPCE] } });
      assert.deepEqual(statements[1].Condition, { StringNotEquals: { 'aws:SourceVpce': [VPCE] } });
    }
  });
  test('cdk-nag: no unsuppressed finding', () => {
    const a = Annotations.fromStack(priv.stack);
    assert.deepEqual([...a.findError('*', Match.stringLikeRegexp('AwsSolutions-.*')),
      ...a.findWarning('*', Match.stringLikeRegexp('AwsSolutions-.*'))].map((e) => `${e.id}: ${e.entry.data}`), []);
  });
});

describe('stages', () => {
  const { template } = dev;
  const api = config.environments.dev.api;
  test('configured name, throttle, metrics, ERROR execution logs without data trace, tracing per environment', () => {
    const stages = Object.values(resourcesOf(template, 'AWS::ApiGateway::Stage'));
    assert.equal(stages.length, APIS.length);
    for (const s of stages) {
      assert.equal(s.Properties.StageName, api.stageName);
      assert.equal(s.Properties.TracingEnabled, config.environments.dev.tracing);
      assert.deepEqual(s.Properties.MethodSettings, [{
        HttpMethod: '*', ResourcePath: '/*', LoggingLevel: 'ERROR', DataTraceEnabled: false, MetricsEnabled: true,
        ThrottlingRateLimit: api.throttle.rateLimit, ThrottlingBurstLimit: api.throttle.burstLimit,
      }]);
    }
    const staging = Object.values(resourcesOf(build({ envName: 'staging' }).template, 'AWS::ApiGateway::Stage'));
    assert.ok(staging.every((s) => s.Properties.TracingEnabled === config.environments.staging.tracing));
  });
  test('JSON access logs to one 365-day log group under the data key', () => {
    const groups = resourcesOf(template, 'AWS::Logs::LogGroup');
    const [groupId, group] = Object.entries(groups).find(([id]) => id.startsWith('ApiAccessLogs'))!;
    assert.equal(group.Properties.RetentionInDays, 365);
    assert.equal(group.Properties.KmsKeyId['Fn::GetAtt'][0], Object.keys(resourcesOf(template, 'AWS::KMS::Key')).find((k) => k.startsWith('DataKey')));
    for (const p of APIS) {
      const stage = Object.values(resourcesOf(template, 'AWS::ApiGateway::Stage'))
        .find((s) => s.Properties.RestApiId.Ref === apiId(template, p))!;
      // The log group's ARN without the trailing `:*` (feature flag logGroupDestinationArnWithoutWildcard).
      const arn = JSON.stringify(stage.Properties.AccessLogSetting.DestinationArn);
      assert.ok(arn.includes(`{"Ref":"${groupId}"}`) && arn.includes(':log-group:') && !arn.includes(':*'), arn);
      assert.equal(stage.Properties.AccessLogSetting.Format, accessLogFormat(p));
    }
  });
  test('the access log line names the caller, the request, the outcome and the authorizer\'s principal', () => {
    const line = JSON.parse(accessLogFormat('gemini'));
    const want: Record<string, string> = {
      requestId: '$context.requestId', extendedRequestId: '$context.extendedRequestId', ip: '$context.identity.sourceIp',
      caller: '$context.identity.caller', userAgent: '$context.identity.userAgent', httpMethod: '$context.httpMethod',
      resourcePath: '$context.resourcePath', path: '$context.path', status: '$context.status', protocol: '$context.protocol',
      responseLength: '$context.responseLength', integrationLatency: '$context.integration.latency',
      integrationStatus: '$context.integration.status', principalId: '$context.authorizer.principalId',
      department: '$context.authorizer.department', username: '$context.authorizer.username',
      authorizerError: '$context.authorizer.error', authorizerStatus: '$context.authorizer.status',
    };
    for (const [k, v] of Object.entries(want)) assert.equal(line[k], v, k);
    // Every context field the authorizer sets (shared/src/auth/context.rs) is logged.
    const fields = [...rust('auth/context.rs').matchAll(/^const \w+: &str = "(\w+)";/gm)].map((m) => m[1]);
    assert.ok(fields.length >= 7);
    for (const f of fields) assert.ok(Object.values(line).includes(`$context.authorizer.${f}`), f);
    // Never a credential: no API key value, header or query string.
    const values = Object.values(line).join(' ');
    assert.ok(!/identity\.apiKey\b(?!Id)|header|querystring|input\.params/i.test(values), values);
  });
  test('the account\'s API Gateway logging role is set before the stages, and retained', () => {
    const accounts = Object.entries(resourcesOf(template, 'AWS::ApiGateway::Account'));
    assert.equal(accounts.length, 1);
    const [accountId, account] = accounts[0];
    assert.equal(account.DeletionPolicy, 'Retain');
    const roleId = (account.Properties.CloudWatchRoleArn['Fn::GetAtt'] as string[])[0];
    const role = resourcesOf(template, 'AWS::IAM::Role')[roleId];
    assert.equal(role.DeletionPolicy, 'Retain');
    assert.match(JSON.stringify(role.Properties.ManagedPolicyArns), /AmazonAPIGatewayPushToCloudWatchLogs/);
    const stages = template.toJSON().Resources;
    for (const id of stageIds(template)) assert.ok(list(stages[id].DependsOn ?? []).includes(accountId), id);
  });
  test('a 5xx alarm per API, handed to the stack\'s alarm list', () => {
    const alarms = Object.values(resourcesOf(template, 'AWS::CloudWatch::Alarm')).filter((a) => a.Properties.MetricName === '5XXError');
    assert.deepEqual(alarms.map((a) => a.Properties.Dimensions[0].Value).sort(), APIS.map((p) => `llm-gateway-dev-${p}`).sort());
    const ids = new Set(dev.stack.alarms.map((a) => dev.stack.getLogicalId(a.node.defaultChild as CfnElement)));
    for (const [id, a] of Object.entries(resourcesOf(template, 'AWS::CloudWatch::Alarm'))) {
      if (a.Properties.MetricName === '5XXError') assert.ok(ids.has(id), id);
    }
  });
});

describe('usage plans', () => {
  const { template } = dev;
  const depts = Object.entries(config.departments);
  test('one plan per department: its throttle, a daily quota, every provider\'s stage; a default plan for the rest', () => {
    const plans = Object.values(resourcesOf(template, 'AWS::ApiGateway::UsagePlan')).map((p) => p.Properties);
    assert.equal(plans.length, depts.length + 1);
    for (const [dept, d] of depts) {
      const plan = plans.find((p) => p.UsagePlanName === `llm-gateway-dev-${dept}`)!;
      assert.deepEqual(plan.Throttle, { RateLimit: d.rateLimit, BurstLimit: d.burstLimit });
      assert.deepEqual(plan.Quota, { Limit: d.quotaPerDay, Period: 'DAY' });
      assert.deepEqual(plan.ApiStages.map((s: any) => s.Stage.Ref).sort(), providerStageIds(template).sort());
    }
    // Callers in no configured department: the stage's throttle, no quota (the authorizer's `default`).
    const fallback = plans.find((p) => p.UsagePlanName === 'llm-gateway-dev-default')!;
    const throttle = loadConfig().environments.dev.api.throttle;
    assert.deepEqual(fallback.Throttle, { RateLimit: throttle.rateLimit, BurstLimit: throttle.burstLimit });
    assert.equal(fallback.Quota, undefined);
  });
  test('each department\'s API key takes its value from its own generated secret', () => {
    const keys = Object.entries(resourcesOf(template, 'AWS::ApiGateway::ApiKey'));
    const secrets = resourcesOf(template, 'AWS::SecretsManager::Secret');
    const planKeys = Object.values(resourcesOf(template, 'AWS::ApiGateway::UsagePlanKey')).map((k) => k.Properties);
    assert.equal(keys.length, depts.length + 1);
    for (const [keyId, key] of keys) {
      const value = key.Properties.Value['Fn::Join'][1];
      assert.equal(value[0], '{{resolve:secretsmanager:');
      assert.equal(value[2], ':SecretString:::}}');
      const secret = secrets[value[1].Ref];
      assert.ok(secret.Properties.GenerateSecretString.PasswordLength >= 30);
      assert.equal(secret.Properties.GenerateSecretString.ExcludePunctuation, true);
      assert.ok(secret.Properties.KmsKeyId);
      assert.equal(planKeys.filter((k) => k.KeyId.Ref === keyId).length, 1);
    }
  });
  test('the authorizer reads {department: key value} from a secret built of references only', () => {
    const env = envOf(template, 'Authorizer');
    const secretId = (env.GATEWAY_USAGE_KEYS_SECRET_ID as any).Ref;
    const secret = resourcesOf(template, 'AWS::SecretsManager::Secret')[secretId];
    const parts: any[] = secret.Properties.SecretString['Fn::Join'][1];
    const json = JSON.parse(parts.map((x) => (typeof x === 'string' ? x : `<${x.Ref}>`)).join(''));
    assert.deepEqual(Object.keys(json).sort(), [...depts.map(([d]) => d), 'default'].sort());
    for (const v of Object.values<string>(json)) assert.match(v, /^\{\{resolve:secretsmanager:<UsageKey\w+>:SecretString:::\}\}$/);
    const reads = statementsOf(template, 'Authorizer').filter((s) => list<string>(s.Action).includes('secretsmanager:GetSecretValue'));
    assert.deepEqual(reads.map((s) => s.Resource), [{ Ref: secretId }]);
  });
  test('no key value, nor anything like one, is in the template', () => {
    for (const t of [template, withDomain.template, priv.template]) {
      // A generated value: 30 or more letters and digits in a row, with both cases and digits (logical
      // ids aside).
      const ids = new Set(Object.keys(t.toJSON().Resources));
      const suspicious = strings(t.toJSON()).filter((s) => !ids.has(s) && [...s.matchAll(/[A-Za-z0-9]{30,}/g)]
        .some(([run]) => /\d/.test(run) && /[a-z]/.test(run) && /[A-Z]/.test(run)));
      assert.deepEqual(suspicious, []);
    }
  });
});
