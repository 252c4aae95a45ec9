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
