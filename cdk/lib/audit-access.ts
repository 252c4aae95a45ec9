// Read-only access for auditors: the audit trail, the digests' public key, the sealed bodies.
import { Duration, Stack, aws_iam as iam } from 'aws-cdk-lib';
import { NagSuppressions } from 'cdk-nag';
import { Buckets, Keys } from './storage';

export function createAuditorRole(stack: Stack, prefix: string, keys: Keys, buckets: Buckets): iam.Role {
  // The auditors (gateway-audit verify / bodies): read the trail, verify digests, open sealed bodies.
  // Assumable by principals of this account whose own IAM policy allows sts:AssumeRole on it.
  const auditors = new iam.Role(stack, 'AuditorRole', {
    assumedBy: new iam.AccountRootPrincipal(),
    description: `${prefix}: auditors (gateway-audit verify, gateway-audit bodies)`,
    maxSessionDuration: Duration.hours(1),
  });
  buckets.audit.grantRead(auditors);
  auditors.addToPolicy(new iam.PolicyStatement({ actions: ['s3:ListBucketVersions'], resources: [buckets.audit.bucketArn] }));
  keys.auditDigest.grant(auditors, 'kms:Verify', 'kms:GetPublicKey', 'kms:DescribeKey');
  auditors.addToPolicy(new iam.PolicyStatement({
    actions: ['kms:Decrypt'],
    resources: [keys.auditBodies.keyArn],
    conditions: { StringEquals: { 'kms:EncryptionContext:purpose': 'llm-gateway-audit-bodies' } },
  }));
  NagSuppressions.addResourceSuppressions(auditors, [{
    id: 'AwsSolutions-IAM5',
    reason: 'auditors read every object of the audit bucket (grantRead: s3:GetObject*, s3:GetBucket*, s3:List* on the bucket and its objects, kms:Decrypt on its key); read only, no write or delete',
    appliesTo: [
      { regex: '/^Action::(s3:(GetObject|GetBucket|List)\\*)$/' },
      { regex: '/^Resource::<AuditBucket[A-F0-9]{8}\\.Arn>\\/\\*$/' },
    ],
  }], true);
  return auditors;
}
