import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { App, Aspects } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { EnvironmentName, GatewayConfig, loadConfig } from '../lib/config';
import { AssetMode, GatewayStack } from '../lib/gateway-stack';

export function build(opts: {
  envName?: EnvironmentName;
  region?: string;
  config?: GatewayConfig;
  assets?: AssetMode;
  extra?: (stack: GatewayStack) => void;
  /** Context to set over cdk.json's. */
  context?: Record<string, unknown>;
} = {}): { stack: GatewayStack; template: Template } {
  // The same context (feature flags) as `cdk synth` reads from cdk.json.
  const context = JSON.parse(readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8')).context;
  const app = new App({ context: { ...context, ...opts.context } });
  const stack = new GatewayStack(app, 'Test', {
    env: { account: '123456789012', region: opts.region ?? 'us-east-1' },
    config: opts.config ?? loadConfig(),
    envName: opts.envName ?? 'dev',
    assets: opts.assets ?? 'placeholder',
  });
  opts.extra?.(stack);
  Aspects.of(app).add(new AwsSolutionsChecks());
  // Template.fromStack synthesizes the app, which runs the nag aspect.
  const template = Template.fromStack(stack);
  return { stack, template };
}

export type Resources = Record<string, { Type: string; Properties?: any; DeletionPolicy?: string }>;

export function resourcesOf(template: Template, type: string): Resources {
  return template.findResources(type) as Resources;
}

/** The logical id of a function by its construct id (`AuditDigest`, `AzureOpenai`, ...). */
export function functionId(template: Template, constructId: string): string {
  const ids = Object.keys(resourcesOf(template, 'AWS::Lambda::Function')).filter((id) => id.startsWith(constructId));
  if (ids.length !== 1) throw new Error(`function ${constructId}: ${ids.join(', ')}`);
  return ids[0];
}

export function envOf(template: Template, constructId: string): Record<string, unknown> {
  const fn = resourcesOf(template, 'AWS::Lambda::Function')[functionId(template, constructId)];
  return fn.Properties.Environment.Variables;
}

/** Every statement of the policies attached to the role of one function. */
export function statementsOf(template: Template, constructId: string): any[] {
  const fn = resourcesOf(template, 'AWS::Lambda::Function')[functionId(template, constructId)];
  const roleId = fn.Properties.Role['Fn::GetAtt'][0];
  return Object.values(resourcesOf(template, 'AWS::IAM::Policy'))
    .filter((p) => p.Properties.Roles.some((r: any) => r.Ref === roleId))
    .flatMap((p) => p.Properties.PolicyDocument.Statement);
}

export function list<T>(v: T | T[]): T[] {
  return Array.isArray(v) ? v : [v];
}

/** The statements of a function's role whose actions start with `service:`. */
export function statementsOn(template: Template, constructId: string, service: string): any[] {
  return statementsOf(template, constructId).filter((s) => list<string>(s.Action).some((a) => a.startsWith(`${service}:`)));
}

/** A table's ARN and its update index's ARN, as the template writes them. */
export const tableArn = (tableId: string) => ({ 'Fn::GetAtt': [tableId, 'Arn'] });
export const updateIndexArn = (arn: object) => ({ 'Fn::Join': ['', [arn, '/index/by-update']] });

/**
 * DynamoDB grants as sorted `[resource, actions]` pairs, one per resource: the IAM policy minimization
 * merges statements of the same actions, so statements alone do not say who may do what.
 */
export function grants(pairs: [object, string[]][]): [string, string[]][] {
  const by = new Map<string, Set<string>>();
  for (const [r, actions] of pairs) {
    const k = JSON.stringify(r);
    by.set(k, new Set([...(by.get(k) ?? []), ...actions]));
  }
  return [...by].map(([r, a]): [string, string[]] => [r, [...a].sort()]).sort(([a], [b]) => (a < b ? -1 : 1));
}

/** A function's DynamoDB grants, as `grants` writes them. */
export function dynamoGrants(template: Template, constructId: string): [string, string[]][] {
  return grants(statementsOn(template, constructId, 'dynamodb')
    .flatMap((s) => list<object>(s.Resource).map((r): [object, string[]] => [r, list<string>(s.Action)])));
}

/** The logical id of a function's role. */
export function roleOf(template: Template, constructId: string): string {
  return resourcesOf(template, 'AWS::Lambda::Function')[functionId(template, constructId)].Properties.Role['Fn::GetAtt'][0];
}

/**
 * The roles whose DynamoDB statements name a table (its ARN or one of its indexes), sorted. Every DynamoDB
 * statement of the template is checked on the way: no `dynamodb:*`, no `*` resource, no `/index/*`.
 */
export function tableUsers(template: Template, tableId: string): string[] {
  const table = JSON.stringify(tableArn(tableId));
  const users = new Set<string>();
  for (const [id, policy] of Object.entries(resourcesOf(template, 'AWS::IAM::Policy'))) {
    for (const s of policy.Properties.PolicyDocument.Statement) {
      const actions = list<string>(s.Action);
      if (!actions.some((a) => a.startsWith('dynamodb:'))) continue;
      assert.ok(!actions.includes('dynamodb:*'), id);
      for (const r of list<unknown>(s.Resource)) {
        const text = JSON.stringify(r);
        assert.ok(r !== '*' && !text.includes('/index/*') && !text.includes('"*"'), `${id}: ${text}`);
        if (text.includes(table)) users.add(policy.Properties.Roles[0].Ref);
      }
    }
  }
  return [...users].sort();
}

/** The logical ids of the functions whose environment sets `variable`, sorted. */
export function functionsWith(template: Template, variable: string): string[] {
  return Object.entries(resourcesOf(template, 'AWS::Lambda::Function'))
    .filter(([, fn]) => fn.Properties.Environment?.Variables?.[variable] !== undefined).map(([id]) => id).sort();
}

/**
 * CloudWatch Logs JSON filter patterns, the subset the stack uses: `{ $.a.b = "text" }` and `{ $.a = 3 }`
 * joined by &&. Anything else throws, so a pattern the evaluator cannot judge fails the test.
 */
export function jsonFilterMatches(pattern: string, event: unknown): boolean {
  const m = /^\{\s*(.+?)\s*\}$/.exec(pattern.trim());
  if (!m) throw new Error(`not a JSON filter pattern: ${pattern}`);
  return m[1].split('&&').every((cond) => {
    const c = /^\s*\$\.([A-Za-z0-9_.]+)\s*(=|!=)\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)\s*$/.exec(cond);
    if (!c) throw new Error(`unsupported condition: ${cond}`);
    const actual = jsonPath(event, `$.${c[1]}`);
    const expected = JSON.parse(c[3]);
    return c[2] === '=' ? actual === expected : actual !== expected;
  });
}
export function jsonPath(event: unknown, p: string): unknown {
  if (!p.startsWith('$.')) throw new Error(`unsupported path ${p}`);
  return p.slice(2).split('.').reduce<any>((v, k) => (v == null ? undefined : v[k]), event);
}

/**
 * The `tracing::<level>!(...)` calls of a Rust source: the level, the argument text and its last string
 * literal (the event's message). String literals may hold `;` and parentheses.
 */
export function tracingCalls(src: string): { level: string; args: string; message?: string }[] {
  return [...src.matchAll(/tracing::(\w+)!\(/g)].map((m) => {
    const start = m.index! + m[0].length;
    let depth = 1;
    let inString = false;
    let i = start;
    for (; i < src.length && depth > 0; i++) {
      const c = src[i];
      if (inString) {
        if (c === '\\') i++;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === '(') depth++;
      else if (c === ')') depth--;
    }
    const args = src.slice(start, i - 1);
    const literals = [...args.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((x) => x[1]);
    return { level: m[1], args, message: literals.at(-1) };
  });
}
