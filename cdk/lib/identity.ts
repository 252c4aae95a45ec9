// The Cognito user pool the authorizer checks tokens against: groups from the scope policy and the
// departments, a resource server with every scope, and the public (PKCE) app client.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Aws, CfnOutput, Duration, RemovalPolicy, Stack, aws_cognito as cognito } from 'aws-cdk-lib';
import { EnvironmentName, GatewayConfig } from './config';
import { pascal } from './names';

export const SCOPE_POLICY_FILE = path.join(__dirname, '..', '..', 'policy', 'scopes.json');

export interface ScopePolicy {
  scopes: Record<string, string[]>;
  token_scope_prefix: string;
  groups: Record<string, string[]>;
  department_group_prefix: string;
}

export function loadScopePolicy(): ScopePolicy {
  return JSON.parse(readFileSync(SCOPE_POLICY_FILE, 'utf8')) as ScopePolicy;
}

/** Every Cognito group: the policy's groups, then `<department_group_prefix><department>` per department. */
export function groupNames(policy: ScopePolicy, config: GatewayConfig): string[] {
  return [
    ...Object.keys(policy.groups),
    ...Object.keys(config.departments).map((d) => `${policy.department_group_prefix}${d}`),
  ];
}

export interface Identity {
  userPool: cognito.UserPool;
  appClient: cognito.UserPoolClient;
  /** The hosted sign-in domain (authorization code + PKCE in a browser). */
  domain: cognito.UserPoolDomain;
}

/**
 * Invitations, codes and password resets go through SES when the environment names an identity:
 * Cognito's own mail sends about 50 messages a day, too few for bulk provisioning. The identity is
 * created and verified out of band (DNS records, production access), like the API's certificates:
 * Cognito refuses an unverified one when the pool is created.
 */
function userPoolEmail(ident: { sesIdentity: string | null; sesFromAddress: string | null }, project: string): cognito.UserPoolEmail {
  if (ident.sesIdentity === null || ident.sesFromAddress === null) return cognito.UserPoolEmail.withCognito();
  const isDomain = !ident.sesIdentity.includes('@');
  return cognito.UserPoolEmail.withSES({
    fromEmail: ident.sesFromAddress,
    fromName: project,
    sesVerifiedDomain: isDomain ? ident.sesIdentity : undefined,
  });
}

export function createIdentity(stack: Stack, config: GatewayConfig, envName: EnvironmentName, prefix: string): Identity {
  const env = config.environments[envName];
  const policy = loadScopePolicy();
  const userPool = new cognito.UserPool(stack, 'UserPool', {
    userPoolName: prefix,
    selfSignUpEnabled: false,
    signInAliases: { email: true, username: true },
    autoVerify: { email: true },
    accountRecovery: cognito.AccountRecovery.EMAIL_ONLY,
    passwordPolicy: {
      minLength: 8, requireLowercase: true, requireUppercase: true, requireDigits: true, requireSymbols: true,
      tempPasswordValidity: Duration.days(3),
    },
    mfa: cognito.Mfa.REQUIRED,
    mfaSecondFactor: { otp: true, sms: false, email: false },
    customAttributes: Object.fromEntries(['user_id', 'department', 'job_title', 'phone', 'start_date', 'end_date', 'status']
      .map((a) => [a, new cognito.StringAttribute({ mutable: true, maxLen: 256 })])),
    featurePlan: cognito.FeaturePlan.PLUS,
    standardThreatProtectionMode: cognito.StandardThreatProtectionMode.FULL_FUNCTION,
    email: userPoolEmail(env.identity, config.project),
    deletionProtection: envName === 'prod',
    removalPolicy: RemovalPolicy.RETAIN,
  });
  for (const g of groupNames(policy, config)) {
    new cognito.CfnUserPoolGroup(stack, `Group${pascal(g)}`, { userPoolId: userPool.userPoolId, groupName: g });
  }
  const scopeNames = [...new Set(Object.entries(policy.scopes).flatMap(([k, v]) => [k, ...v]))];
  const resourceServerId = policy.token_scope_prefix.replace(/\/$/, '');
  const gatewayScopes = scopeNames.map((n) => new cognito.ResourceServerScope({ scopeName: n, scopeDescription: `gateway scope ${n}` }));
  const resourceServer = userPool.addResourceServer('ResourceServer', {
    identifier: resourceServerId,
    scopes: gatewayScopes,
  });
  const appClient = userPool.addClient('AppClient', {
    userPoolClientName: `${prefix}-public`,
    generateSecret: false,
    authFlows: { userSrp: true },
    oAuth: {
      flows: { authorizationCodeGrant: true },
      callbackUrls: env.callbackUrls,
      logoutUrls: env.identity.logoutUrls.length > 0 ? env.identity.logoutUrls : undefined,
      scopes: [
        cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE,
        ...gatewayScopes.map((sc) => cognito.OAuthScope.resourceServer(resourceServer, sc)),
      ],
    },
    accessTokenValidity: Duration.minutes(15),
    idTokenValidity: Duration.minutes(15),
    refreshTokenValidity: Duration.hours(12),
    refreshTokenRotationGracePeriod: Duration.seconds(10),
    enableTokenRevocation: true,
    preventUserExistenceErrors: true,
  });
  // The prefix is regional (<prefix>.auth.<region>.amazoncognito.com), so one name serves every region.
  const domain = userPool.addDomain('HostedDomain', {
    cognitoDomain: { domainPrefix: env.identity.cognitoDomainPrefix ?? `${prefix}-${Aws.ACCOUNT_ID}` },
    managedLoginVersion: cognito.ManagedLoginVersion.NEWER_MANAGED_LOGIN,
  });
  // Managed login shows nothing for a client without a style; Cognito's own style is enough here.
  new cognito.CfnManagedLoginBranding(stack, 'ManagedLoginBranding', {
    userPoolId: userPool.userPoolId,
    clientId: appClient.userPoolClientId,
    useCognitoProvidedValues: true,
  });
  new CfnOutput(stack, 'SignInDomain', { value: domain.baseUrl() });
  new CfnOutput(stack, 'AppClientId', { value: appClient.userPoolClientId });
  new CfnOutput(stack, 'UserPoolId', { value: userPool.userPoolId });
  return { userPool, appClient, domain };
}
