#!/usr/bin/env node
// cdk app: one stack per region of the chosen environment (-c gatewayEnv=dev|staging|prod).
import { App, Aspects } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ENVIRONMENTS, EnvironmentName, loadConfig } from '../lib/config';
import { AssetMode, GatewayStack } from '../lib/gateway-stack';

const app = new App();
const config = loadConfig(app.node.tryGetContext('configFile') || undefined);
const envName = app.node.tryGetContext('gatewayEnv') as EnvironmentName;
if (!ENVIRONMENTS.includes(envName)) throw new Error(`gatewayEnv must be one of ${ENVIRONMENTS.join(', ')}`);
const assets = app.node.tryGetContext('assets') as AssetMode;
if (!['auto', 'real', 'placeholder'].includes(assets)) throw new Error('assets must be auto, real or placeholder');
const only: string | undefined = app.node.tryGetContext('region');
const regions = config.environments[envName].regions.filter((r) => !only || r === only);
if (regions.length === 0) throw new Error(`region ${only} is not configured for ${envName}`);

for (const region of regions) {
  new GatewayStack(app, `LlmGateway-${envName}-${region}`, {
    env: { account: process.env.CDK_DEFAULT_ACCOUNT, region },
    config,
    envName,
    assets,
  });
}
Aspects.of(app).add(new AwsSolutionsChecks({ verbose: true }));
