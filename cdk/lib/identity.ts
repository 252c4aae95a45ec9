// The Cognito user pool the authorizer checks tokens against: groups from the scope policy and the
// departments, a resource server with every scope, and the public (PKCE) app client.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  Aws, CfnOutput, Duration, RemovalPolicy, Stack,
  aws_cognito as cognito,
  aws_iam as iam,
  aws_kms as kms,
  aws_logs as logs,
  custom_resources as cr,
} from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { BootstrapAdminConfig, EnvironmentName, GatewayConfig } from './config';
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

/** The group whose members may change what the admin API serves (the admin scopes, `admin:users` and the rest). */
export const ADMIN_GROUP = 'gateway-admins';

export interface Identity {
  userPool: cognito.UserPool;
  appClient: cognito.UserPoolClient;
  /** The hosted sign-in domain (authorization code + PKCE in a browser). */
  domain: cognito.UserPoolDomain;
  /**
   * The managed login page for the app client, which invitation mails link to (GATEWAY_SIGN_IN_URL);
   * only when the environment names its domain prefix (else undefined).
   */
  signInUrl: string | undefined;
  /** The bootstrap administrator's custom resources (only when `identity.bootstrapAdmin` is set). */
  bootstrapAdmin: Construct | undefined;
}

/**
 * The managed login URL of the app client under a configured domain prefix. `redirect_uri` is the first
 * callback URL: Cognito sends the browser back only to a registered callback URL after sign-in (a logout
 * URL would be refused with `redirect_mismatch`).
 */
export function signInUrl(domainPrefix: string, region: string, clientId: string, callbackUrl: string): string {
  return `https://${domainPrefix}.auth.${region}.amazoncognito.com/login?client_id=${clientId}`
    + `&response_type=code&redirect_uri=${encodeURIComponent(callbackUrl)}`;
}

export interface IdentityOptions {
  /** Encrypts the bootstrap custom resource's log group. */
  dataKey: kms.IKey;
  removal: RemovalPolicy;
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

export function createIdentity(
  stack: Stack, config: GatewayConfig, envName: EnvironmentName, prefix: string, opts: IdentityOptions,
): Identity {
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
    customAttributes: {
      ...Object.fromEntries(['user_id', 'department', 'job_title', 'phone', 'start_date', 'end_date', 'status']
        .map((a) => [a, new cognito.StringAttribute({ mutable: true, maxLen: 256 })])),
      // The employee's short alias (`t.yamada`), set through the admin API.
      alias_id: new cognito.StringAttribute({ mutable: true, maxLen: 64 }),
    },
    featurePlan: cognito.FeaturePlan.PLUS,
    standardThreatProtectionMode: cognito.StandardThreatProtectionMode.FULL_FUNCTION,
    email: userPoolEmail(env.identity, config.project),
    deletionProtection: envName === 'prod',
    removalPolicy: RemovalPolicy.RETAIN,
  });
  const groups = new Map<string, cognito.CfnUserPoolGroup>();
  for (const g of groupNames(policy, config)) {
    groups.set(g, new cognito.CfnUserPoolGroup(stack, `Group${pascal(g)}`, { userPoolId: userPool.userPoolId, groupName: g }));
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

  const prefixConfigured = env.identity.cognitoDomainPrefix;
  const url = prefixConfigured === null
    ? undefined
    : signInUrl(prefixConfigured, stack.region, appClient.userPoolClientId, env.callbackUrls[0]);

  let bootstrapAdmin: Construct | undefined;
  if (env.identity.bootstrapAdmin !== null) {
    const adminGroup = groups.get(ADMIN_GROUP);
    if (!adminGroup) throw new Error(`policy/scopes.json has no group ${ADMIN_GROUP} for the bootstrap administrator`);
    bootstrapAdmin = createBootstrapAdmin(stack, prefix, env.identity.bootstrapAdmin, userPool, adminGroup, opts);
  }
  return { userPool, appClient, domain, signInUrl: url, bootstrapAdmin };
}

/**
 * The first administrator: AdminCreateUser (e-mail verified; Cognito mails the temporary password, which
 * doubles as the address check) and AdminAddUserToGroup `gateway-admins`, each an AwsCustomResource call
 * on create only. The construct id carries a hash of the user name, so a new name creates that user (the
 * old one is kept: nothing is deleted, ever); a changed e-mail alone changes nothing (the admin API does).
 * The provider function gets a role of its own (no managed policy): the two calls on this pool, and its
 * log group.
 */
function createBootstrapAdmin(
  stack: Stack, prefix: string, admin: BootstrapAdminConfig, userPool: cognito.UserPool,
  adminGroup: cognito.CfnUserPoolGroup, opts: IdentityOptions,
): Construct {
  const scope = new Construct(stack, `BootstrapAdmin${createHash('sha256').update(admin.username).digest('hex').slice(0, 8)}`);
  const logGroup = new logs.LogGroup(stack, 'BootstrapAdminLogs', {
    retention: logs.RetentionDays.ONE_YEAR,
    encryptionKey: opts.dataKey,
    removalPolicy: opts.removal,
  });
  const role = new iam.Role(stack, 'BootstrapAdminRole', {
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    description: `${prefix} bootstrap administrator (custom resource provider)`,
  });
  logGroup.grantWrite(role);
  const common = { role, logGroup, installLatestAwsSdk: false, resourceType: 'Custom::BootstrapAdmin' };
  const onPool = (action: string) => cr.AwsCustomResourcePolicy.fromStatements([new iam.PolicyStatement({
    actions: [`cognito-idp:${action}`],
    resources: [userPool.userPoolArn],
  })]);
  const user = new cr.AwsCustomResource(scope, 'User', {
    ...common,
    onCreate: {
      service: 'CognitoIdentityProvider',
      action: 'AdminCreateUser',
      parameters: {
        UserPoolId: userPool.userPoolId,
        Username: admin.username,
        UserAttributes: [{ Name: 'email', Value: admin.email }, { Name: 'email_verified', Value: 'true' }],
        DesiredDeliveryMediums: ['EMAIL'],
      },
      physicalResourceId: cr.PhysicalResourceId.of(`${admin.username}`),
      outputPaths: ['User.Username'],
      logging: cr.Logging.withDataHidden(),
    },
    policy: onPool('AdminCreateUser'),
  });
  const membership = new cr.AwsCustomResource(scope, 'AdminGroup', {
    ...common,
    onCreate: {
      service: 'CognitoIdentityProvider',
      action: 'AdminAddUserToGroup',
      parameters: { UserPoolId: userPool.userPoolId, Username: admin.username, GroupName: ADMIN_GROUP },
      physicalResourceId: cr.PhysicalResourceId.of(`${admin.username}/${ADMIN_GROUP}`),
      logging: cr.Logging.withDataHidden(),
    },
    policy: onPool('AdminAddUserToGroup'),
  });
  membership.node.addDependency(user, adminGroup);
  new CfnOutput(stack, 'BootstrapAdminUsername', { value: admin.username });
  return scope;
}
