// The one typed configuration of the gateway's infrastructure (config/gateway.json), validated on load.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

export const PROVIDERS = ['azure-openai', 'bedrock-claude', 'gemini'] as const;
export type ProviderName = (typeof PROVIDERS)[number];
export const ENVIRONMENTS = ['dev', 'staging', 'prod'] as const;
export type EnvironmentName = (typeof ENVIRONMENTS)[number];
export type Transport = 'direct' | 'queue';
export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'trace';

export interface EnvironmentConfig {
  regions: string[];
  logLevel: LogLevel;
  tracing: boolean;
  auditRetentionDays: number;
  auditGlacierAfterDays: number;
  payloadExpiryDays: number;
  allowedIps: string[];
  callbackUrls: string[];
  api: ApiConfig;
  network: NetworkConfig;
  identity: IdentityConfig;
  operations: OperationsConfig;
}

export interface DomainConfig {
  /** The custom domain every provider API is mapped under (`https://<name>/<provider>/...`). */
  name: string;
  /** An ACM certificate for `name` in each region the environment deploys to. */
  certificateArns: Record<string, string>;
  /** A Route 53 public hosted zone for `name`: the stack adds the alias record (else point DNS yourself). */
  hostedZoneId: string | null;
}

export interface ApiConfig {
  /** `regional`, or `private` (reachable only through the listed execute-api VPC endpoints). */
  endpointType: 'regional' | 'private';
  /** execute-api interface endpoints allowed to call a private API (required when private). */
  vpcEndpointIds: string[];
  /** null: no custom domain; each API then serves `/<provider>/...` on its own execute-api URL. */
  domain: DomainConfig | null;
  stageName: string;
  /** The stage's default throttle (the usage plans' per-department limits apply below it). */
  throttle: { rateLimit: number; burstLimit: number };
  /** WAF rate-based rule: requests per client IP per 5 minutes. */
  wafRateLimitPer5Min: number;
}

export interface NetworkConfig {
  /** The dispatcher's VPC. */
  vpcCidr: string;
  maxAzs: number;
  /** NAT gateways for the dispatcher's way out to Azure OpenAI and Gemini (0: endpoints only). */
  natGateways: number;
}

export interface IdentityConfig {
  /** Hosted sign-in domain prefix (`<prefix>.auth.<region>.amazoncognito.com`); null: `<project>-<env>-<account>`. */
  cognitoDomainPrefix: string | null;
  /** SES identity (a verified domain or address) Cognito sends invitations and codes from; null: Cognito's own mail (about 50 a day). */
  sesIdentity: string | null;
  /** The From address, in the SES identity's domain (or the identity itself when it is an address). */
  sesFromAddress: string | null;
  logoutUrls: string[];
  /**
   * How long the authorizer may answer from its cache of revocation records (GATEWAY_REVOCATION_CACHE_SECS):
   * the longest a disabled or signed-out user's still-valid access token keeps working. 1 to 300.
   */
  revocationCacheSeconds: number;
  /**
   * Minutes east of UTC where HR dates are meant (GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES; 540 for Japan):
   * "today" for the provisioner, the admin API and the scheduler's daily user-dates job, which runs at
   * 00:05 in this offset. -720 to 840.
   */
  provisioningUtcOffsetMinutes: number;
  /**
   * The first administrator, created by the stack in each region's pool (in group `gateway-admins`,
   * Cognito mails the temporary password); null: none (README "Build and deploy", step 6).
   */
  bootstrapAdmin: BootstrapAdminConfig | null;
}

export interface BootstrapAdminConfig {
  /** The Cognito user name (not an e-mail address: the pool signs in by user name or e-mail). */
  username: string;
  email: string;
}

export interface OperationsConfig {
  /** Addresses subscribed to the alarm topic (they confirm the subscription by mail). */
  alarmEmails: string[];
  /** A trail for the account's management events (false where the organisation runs one). */
  cloudTrail: boolean;
  /** S3 data events on the gateway's buckets and Lambda invoke events on its functions in that trail. */
  cloudTrailDataEvents: boolean;
  guardDuty: boolean;
  securityHub: boolean;
  awsConfig: boolean;
}

export interface ProviderConfig {
  transport: Transport;
  /** Upstream base URL (Azure OpenAI, Gemini); Bedrock uses the regional endpoint. */
  endpoint?: string;
  /** Where the provider serves the requests (Azure OpenAI, Gemini): the audit events' region, for regional prices. */
  region?: string;
}

export interface DepartmentConfig {
  /** What HR files may call the department besides its id (`営業部`); the provisioner maps them. */
  names: string[];
  rateLimit: number;
  burstLimit: number;
  quotaPerDay: number;
}

export interface FunctionsConfig {
  routeTimeoutSecs: number;
  routeMemoryMb: number;
  routeReservedConcurrency: number | null;
  dispatcherReservedConcurrency: number | null;
  upstreamConnectTimeoutMs: number;
  upstreamResponseTimeoutMs: number;
  dispatchVisibilitySecs: number;
  dispatchMaxReceives: number;
  auditWriterTimeoutSecs: number;
  auditDigestGraceSecs: number;
  auditDigestMaxHours: number;
  auditBodies: boolean;
  auditBodyMaxBytes: number;
}

export interface GatewayConfig {
  project: string;
  environments: Record<EnvironmentName, EnvironmentConfig>;
  providers: Record<ProviderName, ProviderConfig>;
  departments: Record<string, DepartmentConfig>;
  functions: FunctionsConfig;
}

export const DEFAULT_CONFIG_FILE = path.join(__dirname, '..', '..', 'config', 'gateway.json');

export function loadConfig(file: string = DEFAULT_CONFIG_FILE): GatewayConfig {
  return parseConfig(JSON.parse(readFileSync(file, 'utf8')), file);
}

class Checker {
  errors: string[] = [];
  fail(where: string, msg: string) {
    this.errors.push(`${where}: ${msg}`);
  }
  obj(v: unknown, where: string, keys: string[] | 'any', optional: string[] = []): Record<string, unknown> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      this.fail(where, 'must be an object');
      return {};
    }
    const o = v as Record<string, unknown>;
    if (keys === 'any') return o;
    for (const k of Object.keys(o)) {
      if (!keys.includes(k) && !optional.includes(k)) this.fail(`${where}.${k}`, 'unknown key');
    }
    for (const k of keys) if (!(k in o)) this.fail(`${where}.${k}`, 'missing');
    return o;
  }
  int(v: unknown, where: string, min: number, max: number): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(where, `must be an integer in [${min}, ${max}]`);
    }
    return v as number;
  }
  bool(v: unknown, where: string): boolean {
    if (typeof v !== 'boolean') this.fail(where, 'must be true or false');
    return v as boolean;
  }
  oneOf<T extends string>(v: unknown, where: string, allowed: readonly T[]): T {
    if (typeof v !== 'string' || !allowed.includes(v as T)) this.fail(where, `must be one of ${allowed.join(', ')}`);
    return v as T;
  }
  strings(v: unknown, where: string, test: (s: string) => boolean, what: string, nonEmpty = true): string[] {
    if (!Array.isArray(v) || (nonEmpty && v.length === 0)) {
      this.fail(where, `must be a${nonEmpty ? ' non-empty' : 'n'} array`);
      return [];
    }
    v.forEach((s, i) => {
      if (typeof s !== 'string' || !test(s)) this.fail(`${where}[${i}]`, `must be ${what}`);
    });
    if (new Set(v).size !== v.length) this.fail(where, 'has duplicates');
    return v as string[];
  }
}

const REGION = /^[a-z]{2}(-gov)?-[a-z]+-\d$/;
const CIDR4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(3[0-2]|[12]?\d)$/;

function isCallbackUrl(s: string): boolean {
  try {
    const u = new URL(s);
    // Cognito allows http only for localhost.
    return u.protocol === 'https:' || (u.protocol === 'http:' && u.hostname === 'localhost');
  } catch {
    return false;
  }
}

const EMAIL = /^[^@\s]+@[a-z0-9.-]+\.[a-z]{2,}$/i;
/** A user name the pool accepts: with e-mail as a sign-in alias, Cognito refuses names shaped like addresses. */
const COGNITO_USERNAME = /^[A-Za-z0-9._+-]{1,128}$/;
const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,}$/;
const ACM_ARN = /^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[0-9a-f-]{36}$/;

function isHttpsUrl(s: string): boolean {
  try {
    return new URL(s).protocol === 'https:';
  } catch {
    return false;
  }
}

function checkApi(c: Checker, v: unknown, w: string, regions: string[]) {
  const a = c.obj(v, w, ['endpointType', 'vpcEndpointIds', 'domain', 'stageName', 'throttle', 'wafRateLimitPer5Min']);
  c.oneOf(a.endpointType, `${w}.endpointType`, ['regional', 'private'] as const);
  c.strings(a.vpcEndpointIds, `${w}.vpcEndpointIds`, (s) => /^vpce-[0-9a-f]{8,17}$/.test(s), 'a VPC endpoint id (vpce-...)', false);
  if (a.endpointType === 'private' && Array.isArray(a.vpcEndpointIds) && a.vpcEndpointIds.length === 0) {
    c.fail(`${w}.vpcEndpointIds`, 'must name at least one execute-api endpoint for a private API');
  }
  if (a.endpointType === 'regional' && Array.isArray(a.vpcEndpointIds) && a.vpcEndpointIds.length > 0) {
    c.fail(`${w}.vpcEndpointIds`, 'is only for endpointType private');
  }
  if (a.domain !== null) {
    const d = c.obj(a.domain, `${w}.domain`, ['name', 'certificateArns', 'hostedZoneId']);
    if (typeof d.name !== 'string' || !DOMAIN.test(d.name)) c.fail(`${w}.domain.name`, 'must be a domain name');
    const certs = c.obj(d.certificateArns, `${w}.domain.certificateArns`, 'any');
    for (const r of regions) {
      if (!(r in certs)) c.fail(`${w}.domain.certificateArns.${r}`, 'missing (a certificate in every region deployed to)');
    }
    for (const [r, arn] of Object.entries(certs)) {
      if (!regions.includes(r)) c.fail(`${w}.domain.certificateArns.${r}`, 'is not a region of this environment');
      if (typeof arn !== 'string' || !ACM_ARN.test(arn) || arn.split(':')[3] !== r) {
        c.fail(`${w}.domain.certificateArns.${r}`, `must be an ACM certificate ARN in ${r}`);
      }
    }
    if (d.hostedZoneId !== null && (typeof d.hostedZoneId !== 'string' || !/^Z[A-Z0-9]{4,31}$/.test(d.hostedZoneId))) {
      c.fail(`${w}.domain.hostedZoneId`, 'must be null or a Route 53 hosted zone id');
    }
  }
  if (a.endpointType === 'private' && a.domain !== null) {
    // Private custom domain names need per-endpoint access associations and a private hosted zone aimed at
    // the endpoint, which this configuration does not describe and the stack does not build.
    c.fail(`${w}.domain`, 'must be null for a private API (clients use the {api-id}-{vpce-id} hostnames, cdk/README.md)');
  }
  if (typeof a.stageName !== 'string' || !/^[a-zA-Z0-9_]{1,64}$/.test(a.stageName)) c.fail(`${w}.stageName`, 'must be letters, digits and _');
  const t = c.obj(a.throttle, `${w}.throttle`, ['rateLimit', 'burstLimit']);
  c.int(t.rateLimit, `${w}.throttle.rateLimit`, 1, 10000);
  c.int(t.burstLimit, `${w}.throttle.burstLimit`, 1, 5000);
  c.int(a.wafRateLimitPer5Min, `${w}.wafRateLimitPer5Min`, 10, 2_000_000_000);
}

/** Validates a parsed configuration; throws one error listing every problem. */
export function parseConfig(raw: unknown, source = 'configuration'): GatewayConfig {
  const c = new Checker();
  const root = c.obj(raw, 'config', ['project', 'environments', 'providers', 'departments', 'functions']);
  if (typeof root.project !== 'string' || !/^[a-z][a-z0-9-]{1,30}$/.test(root.project)) {
    c.fail('config.project', 'must be a short lower-case name');
  }
  const envs = c.obj(root.environments, 'config.environments', [...ENVIRONMENTS]);
  for (const name of ENVIRONMENTS) {
    const w = `config.environments.${name}`;
    const e = c.obj(envs[name], w, [
      'regions', 'logLevel', 'tracing', 'auditRetentionDays', 'auditGlacierAfterDays', 'payloadExpiryDays',
      'allowedIps', 'callbackUrls', 'api', 'network', 'identity', 'operations',
    ]);
    c.strings(e.regions, `${w}.regions`, (s) => REGION.test(s), 'an AWS region name');
    c.oneOf(e.logLevel, `${w}.logLevel`, ['error', 'warn', 'info', 'debug', 'trace'] as const);
    c.bool(e.tracing, `${w}.tracing`);
    c.int(e.auditRetentionDays, `${w}.auditRetentionDays`, 1, 36500);
    c.int(e.auditGlacierAfterDays, `${w}.auditGlacierAfterDays`, 1, 36500);
    c.int(e.payloadExpiryDays, `${w}.payloadExpiryDays`, 1, 30);
    c.strings(e.allowedIps, `${w}.allowedIps`, (s) => CIDR4.test(s), 'an IPv4 CIDR (a.b.c.d/n)');
    c.strings(e.callbackUrls, `${w}.callbackUrls`, isCallbackUrl, 'an https URL (http only for localhost)');
    checkApi(c, e.api, `${w}.api`, Array.isArray(e.regions) ? (e.regions as string[]) : []);
    const n = c.obj(e.network, `${w}.network`, ['vpcCidr', 'maxAzs', 'natGateways']);
    if (typeof n.vpcCidr !== 'string' || !CIDR4.test(n.vpcCidr) || !/\/(1[6-9]|2[0-4])$/.test(n.vpcCidr)) {
      c.fail(`${w}.network.vpcCidr`, 'must be an IPv4 CIDR from /16 to /24');
    }
    c.int(n.maxAzs, `${w}.network.maxAzs`, 1, 3);
    c.int(n.natGateways, `${w}.network.natGateways`, 0, 3);
    if (typeof n.natGateways === 'number' && typeof n.maxAzs === 'number' && n.natGateways > n.maxAzs) {
      // The CDK would quietly make one per zone and no more.
      c.fail(`${w}.network.natGateways`, 'must not exceed maxAzs (at most one NAT gateway per zone)');
    }
    const i = c.obj(e.identity, `${w}.identity`, [
      'cognitoDomainPrefix', 'sesIdentity', 'sesFromAddress', 'logoutUrls', 'revocationCacheSeconds',
      'provisioningUtcOffsetMinutes', 'bootstrapAdmin',
    ]);
    if (i.cognitoDomainPrefix !== null && (typeof i.cognitoDomainPrefix !== 'string' || !/^[a-z0-9](-?[a-z0-9])*$/.test(i.cognitoDomainPrefix) || i.cognitoDomainPrefix.length > 63 || /aws|amazon|cognito/.test(i.cognitoDomainPrefix))) {
      c.fail(`${w}.identity.cognitoDomainPrefix`, 'must be null or lower-case letters, digits and single hyphens, without aws, amazon or cognito');
    }
    if (i.sesIdentity !== null && (typeof i.sesIdentity !== 'string' || !(EMAIL.test(i.sesIdentity) || DOMAIN.test(i.sesIdentity)))) {
      c.fail(`${w}.identity.sesIdentity`, 'must be null, an e-mail address or a domain');
    }
    if ((i.sesIdentity === null) !== (i.sesFromAddress === null)) {
      c.fail(`${w}.identity.sesFromAddress`, 'must be set exactly when sesIdentity is');
    } else if (typeof i.sesFromAddress === 'string' && typeof i.sesIdentity === 'string') {
      const ok = EMAIL.test(i.sesFromAddress) && (i.sesFromAddress === i.sesIdentity || i.sesFromAddress.toLowerCase().endsWith(`@${i.sesIdentity.toLowerCase()}`));
      if (!ok) c.fail(`${w}.identity.sesFromAddress`, 'must be an address of the SES identity (the identity itself, or in its domain)');
    }
    c.strings(i.logoutUrls, `${w}.identity.logoutUrls`, isCallbackUrl, 'an https URL (http only for localhost)', false);
    c.int(i.revocationCacheSeconds, `${w}.identity.revocationCacheSeconds`, 1, 300);
    // The provisioner's own bounds (functions/provisioner/src/config.rs).
    c.int(i.provisioningUtcOffsetMinutes, `${w}.identity.provisioningUtcOffsetMinutes`, -720, 840);
    if (i.bootstrapAdmin !== null && i.bootstrapAdmin !== undefined) {
      const b = c.obj(i.bootstrapAdmin, `${w}.identity.bootstrapAdmin`, ['username', 'email']);
      if (typeof b.username !== 'string' || !COGNITO_USERNAME.test(b.username)) {
        c.fail(`${w}.identity.bootstrapAdmin.username`, 'must be 1 to 128 letters, digits or . _ + - (not an e-mail address: the pool takes e-mail as a sign-in alias)');
      }
      if (typeof b.email !== 'string' || !EMAIL.test(b.email)) c.fail(`${w}.identity.bootstrapAdmin.email`, 'must be an e-mail address');
    }
    const o = c.obj(e.operations, `${w}.operations`, ['alarmEmails', 'cloudTrail', 'cloudTrailDataEvents', 'guardDuty', 'securityHub', 'awsConfig']);
    c.strings(o.alarmEmails, `${w}.operations.alarmEmails`, (s) => EMAIL.test(s), 'an e-mail address', false);
    for (const k of ['cloudTrail', 'cloudTrailDataEvents', 'guardDuty', 'securityHub', 'awsConfig']) c.bool(o[k], `${w}.operations.${k}`);
    if (o.cloudTrailDataEvents === true && o.cloudTrail !== true) {
      c.fail(`${w}.operations.cloudTrailDataEvents`, 'needs cloudTrail (the data events go to the stack\'s trail)');
    }
  }
  const providers = c.obj(root.providers, 'config.providers', [...PROVIDERS]);
  for (const name of PROVIDERS) {
    const w = `config.providers.${name}`;
    const needsEndpoint = name !== 'bedrock-claude';
    const p = c.obj(providers[name], w, needsEndpoint ? ['transport', 'endpoint'] : ['transport'],
      needsEndpoint ? ['endpoint', 'region'] : ['endpoint']);
    c.oneOf(p.transport, `${w}.transport`, ['direct', 'queue'] as const);
    // Where the provider serves the requests (Bedrock's is the deployment's own region): the audit events'
    // region, which regional prices match.
    if (p.region !== undefined && (typeof p.region !== 'string' || !/^[a-z][a-z0-9-]{1,39}$/.test(p.region))) {
      c.fail(`${w}.region`, 'must be a region name (lower-case letters, digits and -), e.g. japaneast or europe-west4');
    }
    if (p.endpoint !== undefined && (typeof p.endpoint !== 'string' || !isHttpsUrl(p.endpoint))) {
      c.fail(`${w}.endpoint`, 'must be an https URL');
    }
  }
  const depts = c.obj(root.departments, 'config.departments', 'any');
  // A name HR files use must pick one department; ids count as names too.
  const departmentNames = new Map<string, string>(Object.keys(depts).map((d) => [d, d]));
  for (const [name, d] of Object.entries(depts)) {
    const w = `config.departments.${name}`;
    if (!/^[a-z][a-z0-9-]{0,40}$/.test(name)) c.fail(w, 'name must be lower-case letters, digits and -');
    const o = c.obj(d, w, ['names', 'rateLimit', 'burstLimit', 'quotaPerDay']);
    c.strings(o.names, `${w}.names`, (n) => n.trim() === n && n.length > 0 && n.length <= 128 && !/^[=+\-@\t\r]/.test(n) && !/[\x00-\x1f\x7f]/.test(n), 'a name of at most 128 characters, no formula start or control character', false);
    if (Array.isArray(o.names)) {
      for (const n of o.names as string[]) {
        const owner = departmentNames.get(n);
        if (owner !== undefined && owner !== name) c.fail(`${w}.names`, `${JSON.stringify(n)} also names department ${owner}`);
        departmentNames.set(n, name);
      }
    }
    c.int(o.rateLimit, `${w}.rateLimit`, 1, 10000);
    c.int(o.burstLimit, `${w}.burstLimit`, 1, 5000);
    c.int(o.quotaPerDay, `${w}.quotaPerDay`, 1, 1e9);
  }
  if (Object.keys(depts).length === 0) c.fail('config.departments', 'needs at least one department');
  const f = c.obj(root.functions, 'config.functions', [
    'routeTimeoutSecs', 'routeMemoryMb', 'routeReservedConcurrency', 'dispatcherReservedConcurrency',
    'upstreamConnectTimeoutMs', 'upstreamResponseTimeoutMs', 'dispatchVisibilitySecs', 'dispatchMaxReceives',
    'auditWriterTimeoutSecs', 'auditDigestGraceSecs', 'auditDigestMaxHours', 'auditBodies', 'auditBodyMaxBytes',
  ]);
  const w = 'config.functions';
  c.int(f.routeTimeoutSecs, `${w}.routeTimeoutSecs`, 30, 900);
  c.int(f.routeMemoryMb, `${w}.routeMemoryMb`, 128, 10240);
  for (const k of ['routeReservedConcurrency', 'dispatcherReservedConcurrency']) {
    if (f[k] !== null) c.int(f[k], `${w}.${k}`, 1, 10000);
  }
  c.int(f.upstreamConnectTimeoutMs, `${w}.upstreamConnectTimeoutMs`, 100, 60000);
  c.int(f.upstreamResponseTimeoutMs, `${w}.upstreamResponseTimeoutMs`, 1000, 900000);
  c.int(f.dispatchVisibilitySecs, `${w}.dispatchVisibilitySecs`, 10, 43200);
  c.int(f.dispatchMaxReceives, `${w}.dispatchMaxReceives`, 1, 1000);
  c.int(f.auditWriterTimeoutSecs, `${w}.auditWriterTimeoutSecs`, 10, 900);
  c.int(f.auditDigestGraceSecs, `${w}.auditDigestGraceSecs`, 60, 3600);
  c.int(f.auditDigestMaxHours, `${w}.auditDigestMaxHours`, 1, 24 * 31);
  c.bool(f.auditBodies, `${w}.auditBodies`);
  c.int(f.auditBodyMaxBytes, `${w}.auditBodyMaxBytes`, 1024, 64 * 1024 * 1024);
  if (
    typeof f.auditDigestGraceSecs === 'number' &&
    typeof f.auditWriterTimeoutSecs === 'number' &&
    f.auditDigestGraceSecs <= 2 * f.auditWriterTimeoutSecs
  ) {
    // The grace period must outlast the writer's timeout plus one SQS redelivery of its batch.
    c.fail(`${w}.auditDigestGraceSecs`, 'must be longer than twice auditWriterTimeoutSecs');
  }
  if (c.errors.length > 0) {
    throw new Error(`invalid ${source}:\n  ${c.errors.join('\n  ')}`);
  }
  return raw as GatewayConfig;
}
