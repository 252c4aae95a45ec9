//! The AWS resources the stack needs, created through the real AWS SDK against moto (or any endpoint in
//! `AWS_ENDPOINT_URL`): the Cognito user pool, app client and groups, the secrets holding upstream keys
//! and department usage keys, and a demo user.

use aws_sdk_cognitoidentityprovider::types::{
    AttributeDataType, AttributeType, AuthFlowType, ExplicitAuthFlowsType, MessageActionType,
    PasswordPolicyType, SchemaAttributeType, UserPoolMfaType, UserPoolPolicyType,
};
use aws_sdk_cognitoidentityprovider::Client as Cognito;
use aws_sdk_secretsmanager::Client as SecretsManager;
use gateway_shared::scopes::Policy;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct UserPool {
    pub user_pool_id: String,
    pub app_client_id: String,
    pub groups: Vec<String>,
}

fn sdk_error<E: std::error::Error + Send + Sync + 'static>(
    what: &str,
) -> impl FnOnce(E) -> BoxError + '_ {
    move |e| {
        format!(
            "{what}: {}",
            aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(e)
        )
        .into()
    }
}

/// The user pool as the CDK stack declares it, with one group per policy group and per configured
/// department (`departments`).
pub async fn create_user_pool(
    cognito: &Cognito,
    name: &str,
    policy: &Policy,
    departments: impl Iterator<Item = &str>,
) -> Result<UserPool, BoxError> {
    // Seed 002's password policy; MFA is required in the deployed stack but off here, because moto cannot
    // complete an MFA challenge for scripted sign-in.
    let password_policy = PasswordPolicyType::builder()
        .minimum_length(8)
        .require_lowercase(true)
        .require_uppercase(true)
        .require_numbers(true)
        .require_symbols(true)
        .build();
    let mut request = cognito
        .create_user_pool()
        .pool_name(name)
        .policies(
            UserPoolPolicyType::builder()
                .password_policy(password_policy)
                .build(),
        )
        .auto_verified_attributes(
            aws_sdk_cognitoidentityprovider::types::VerifiedAttributeType::Email,
        )
        .mfa_configuration(UserPoolMfaType::Off);
    for attribute in gateway_shared::provisioning::plan::pool_custom_attributes() {
        request = request.schema(
            SchemaAttributeType::builder()
                .name(attribute)
                .attribute_data_type(AttributeDataType::String)
                .mutable(true)
                .build(),
        );
    }
    let pool = request
        .send()
        .await
        .map_err(sdk_error("create user pool"))?;
    let user_pool_id = pool
        .user_pool()
        .and_then(|p| p.id())
        .ok_or("create user pool: no id returned")?
        .to_string();

    let client = cognito
        .create_user_pool_client()
        .user_pool_id(&user_pool_id)
        .client_name("gateway-sdk-users")
        .generate_secret(false)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowAdminUserPasswordAuth)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowUserPasswordAuth)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowUserSrpAuth)
        .explicit_auth_flows(ExplicitAuthFlowsType::AllowRefreshTokenAuth)
        .send()
        .await
        .map_err(sdk_error("create app client"))?;
    let app_client_id = client
        .user_pool_client()
        .and_then(|c| c.client_id())
        .ok_or("create app client: no id returned")?
        .to_string();

    let mut groups: Vec<String> = policy.group_names().map(str::to_string).collect();
    groups.extend(departments.map(|d| format!("{}{d}", policy.department_group_prefix())));
    for group in &groups {
        cognito
            .create_group()
            .user_pool_id(&user_pool_id)
            .group_name(group)
            .send()
            .await
            .map_err(sdk_error("create group"))?;
    }
    Ok(UserPool {
        user_pool_id,
        app_client_id,
        groups,
    })
}

/// Creates a confirmed user in the given groups and signs it in, returning the access token.
pub async fn create_user_and_sign_in(
    cognito: &Cognito,
    pool: &UserPool,
    username: &str,
    password: &str,
    groups: &[String],
    department: &str,
) -> Result<String, BoxError> {
    cognito
        .admin_create_user()
        .user_pool_id(&pool.user_pool_id)
        .username(username)
        .message_action(MessageActionType::Suppress)
        .user_attributes(
            AttributeType::builder()
                .name("email")
                .value(format!("{username}@example.com"))
                .build()?,
        )
        .user_attributes(
            AttributeType::builder()
                .name("email_verified")
                .value("true")
                .build()?,
        )
        .user_attributes(
            AttributeType::builder()
                .name("custom:department")
                .value(department)
                .build()?,
        )
        .send()
        .await
        .map_err(sdk_error("create user"))?;
    cognito
        .admin_set_user_password()
        .user_pool_id(&pool.user_pool_id)
        .username(username)
        .password(password)
        .permanent(true)
        .send()
        .await
        .map_err(sdk_error("set password"))?;
    for group in groups {
        cognito
            .admin_add_user_to_group()
            .user_pool_id(&pool.user_pool_id)
            .username(username)
            .group_name(group)
            .send()
            .await
            .map_err(sdk_error("add user to group"))?;
    }
    sign_in(cognito, pool, username, password).await
}

pub async fn sign_in(
    cognito: &Cognito,
    pool: &UserPool,
    username: &str,
    password: &str,
) -> Result<String, BoxError> {
    let auth = cognito
        .admin_initiate_auth()
        .user_pool_id(&pool.user_pool_id)
        .client_id(&pool.app_client_id)
        .auth_flow(AuthFlowType::AdminUserPasswordAuth)
        .auth_parameters("USERNAME", username)
        .auth_parameters("PASSWORD", password)
        .send()
        .await
        .map_err(sdk_error("sign in"))?;
    Ok(auth
        .authentication_result()
        .and_then(|r| r.access_token())
        .ok_or("sign in: no access token returned")?
        .to_string())
}

/// Creates (or overwrites) a secret and returns its ARN.
pub async fn put_secret(
    secrets: &SecretsManager,
    name: &str,
    value: &str,
) -> Result<String, BoxError> {
    let created = secrets
        .create_secret()
        .name(name)
        .description("llm-gateway local stack")
        .secret_string(value)
        .send()
        .await;
    match created {
        Ok(out) => Ok(out.arn().unwrap_or(name).to_string()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_exists_exception()) =>
        {
            let out = secrets
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "put secret {name}: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    )
                })?;
            Ok(out.arn().unwrap_or(name).to_string())
        }
        Err(e) => Err(format!(
            "create secret {name}: {}",
            aws_sdk_secretsmanager::error::DisplayErrorContext(e)
        )
        .into()),
    }
}

/// A department's API Gateway usage plan, as the stack's `UsagePlan` creates it; returns its id.
pub async fn create_usage_plan(
    apigateway: &aws_sdk_apigateway::Client,
    name: &str,
    limits: &gateway_shared::budgets::settings::PlanLimits,
) -> Result<String, BoxError> {
    use aws_sdk_apigateway::types::{QuotaPeriodType, QuotaSettings, ThrottleSettings};
    let plan = apigateway
        .create_usage_plan()
        .name(name)
        .throttle(
            ThrottleSettings::builder()
                .rate_limit(f64::from(limits.rate_limit))
                .burst_limit(limits.burst_limit as i32)
                .build(),
        )
        .quota(
            QuotaSettings::builder()
                .limit(i32::try_from(limits.quota_per_day).unwrap_or(i32::MAX))
                .period(QuotaPeriodType::Day)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            format!(
                "create usage plan {name}: {}",
                aws_sdk_apigateway::error::DisplayErrorContext(e)
            )
        })?;
    Ok(plan.id().unwrap_or_default().to_string())
}

pub struct Queue {
    pub url: String,
    pub arn: String,
}

/// A queue with its dead-letter queue (every async path has one), SSE with SQS-managed keys.
pub async fn create_queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    visibility_timeout_secs: u32,
    max_receive_count: u32,
) -> Result<(Queue, Queue), BoxError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .attributes(A::SqsManagedSseEnabled, "true")
        .attributes(A::MessageRetentionPeriod, "1209600")
        .send()
        .await
        .map_err(|e| {
            format!(
                "create dead-letter queue: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url
        .ok_or("create dead-letter queue: no url")?;
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;
    let redrive =
        serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
            .to_string();
    let url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(A::SqsManagedSseEnabled, "true")
        .attributes(A::VisibilityTimeout, visibility_timeout_secs.to_string())
        .attributes(A::RedrivePolicy, redrive)
        .send()
        .await
        .map_err(|e| {
            format!(
                "create queue {name}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?
        .queue_url
        .ok_or("create queue: no url")?;
    let arn = queue_arn(sqs, &url).await?;
    Ok((
        Queue { url, arn },
        Queue {
            url: dlq_url,
            arn: dlq_arn,
        },
    ))
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, BoxError> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "queue attributes: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            )
        })?;
    Ok(attributes
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .ok_or("queue has no ARN")?
        .clone())
}

pub async fn create_bucket(s3: &aws_sdk_s3::Client, name: &str) -> Result<(), BoxError> {
    s3.create_bucket().bucket(name).send().await.map_err(|e| {
        format!(
            "create bucket {name}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        )
    })?;
    Ok(())
}

/// The payload bucket as the CDK stack declares it: its objects expire after `expiry_days`.
pub async fn create_payload_bucket(
    s3: &aws_sdk_s3::Client,
    name: &str,
    expiry_days: i32,
) -> Result<(), BoxError> {
    use aws_sdk_s3::types::{
        BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
        LifecycleRuleFilter,
    };
    create_bucket(s3, name).await?;
    let rule = LifecycleRule::builder()
        .id("expire-payloads")
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .expiration(LifecycleExpiration::builder().days(expiry_days).build())
        .build()
        .map_err(|e| format!("lifecycle rule for {name}: {e}"))?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(name)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| format!("lifecycle configuration for {name}: {e}"))?,
        )
        .send()
        .await
        .map_err(|e| {
            format!(
                "put lifecycle configuration {name}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    Ok(())
}

/// The audit bucket as the CDK stack declares it: Object Lock enabled at creation (which needs
/// versioning: every put adds a version, a delete only adds a delete marker) and a default retention in
/// COMPLIANCE mode, so no one, root included, can shorten it or delete a locked version before it
/// expires. Every put into it must carry Content-MD5 or a checksum.
pub async fn create_audit_bucket(
    s3: &aws_sdk_s3::Client,
    name: &str,
    retention_days: i32,
) -> Result<(), BoxError> {
    use aws_sdk_s3::types::{
        BucketVersioningStatus, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled,
        ObjectLockRetentionMode, ObjectLockRule, VersioningConfiguration,
    };
    let failed = |what: &str, e: &dyn std::fmt::Display| -> BoxError {
        format!("{what} {name}: {e}").into()
    };
    s3.create_bucket()
        .bucket(name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .map_err(|e| failed("create bucket", &aws_sdk_s3::error::DisplayErrorContext(e)))?;
    // A bucket kept from an earlier start (an `AWS_ENDPOINT_URL` that outlives the stack) is locked
    // already, and S3 refuses to change the lock of a bucket with objects: keep its configuration.
    let existing = s3
        .get_object_lock_configuration()
        .bucket(name)
        .send()
        .await
        .ok()
        .and_then(|out| out.object_lock_configuration)
        .and_then(|config| config.rule);
    if let Some(rule) = existing {
        let days = rule.default_retention().and_then(|r| r.days());
        if days != Some(retention_days) {
            tracing::warn!(
                bucket = name,
                ?days,
                wanted = retention_days,
                "the existing audit bucket keeps its own Object Lock retention"
            );
        }
        return Ok(());
    }
    s3.put_bucket_versioning()
        .bucket(name)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            failed(
                "enable versioning on",
                &aws_sdk_s3::error::DisplayErrorContext(e),
            )
        })?;
    s3.put_object_lock_configuration()
        .bucket(name)
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(ObjectLockRetentionMode::Compliance)
                                .days(retention_days)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(|e| {
            failed(
                "set the Object Lock retention of",
                &aws_sdk_s3::error::DisplayErrorContext(e),
            )
        })?;
    Ok(())
}

/// The key that signs audit digests: asymmetric RSA-3072, SIGN_VERIFY (RSASSA-PSS SHA-256). Returns
/// its ARN.
pub async fn create_digest_key(kms: &aws_sdk_kms::Client) -> Result<String, BoxError> {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let key = kms
        .create_key()
        .key_spec(KeySpec::Rsa3072)
        .key_usage(KeyUsageType::SignVerify)
        .description("llm-gateway local stack: signs the hourly audit digests")
        .send()
        .await
        .map_err(|e| {
            format!(
                "create the audit digest key: {}",
                aws_sdk_kms::error::DisplayErrorContext(e)
            )
        })?;
    Ok(key
        .key_metadata()
        .and_then(|m| m.arn())
        .ok_or("create the audit digest key: no ARN returned")?
        .to_string())
}

/// The symmetric KMS key the routes generate audit-body data keys under; returns its ARN.
pub async fn create_audit_bodies_key(kms: &aws_sdk_kms::Client) -> Result<String, BoxError> {
    let created = kms
        .create_key()
        .description("llm-gateway local stack: audit request and response bodies")
        .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
        .key_spec(aws_sdk_kms::types::KeySpec::SymmetricDefault)
        .send()
        .await
        .map_err(|e| {
            format!(
                "create audit bodies key: {}",
                aws_sdk_kms::error::DisplayErrorContext(e)
            )
        })?;
    Ok(created
        .key_metadata()
        .and_then(|m| m.arn())
        .ok_or("create audit bodies key: no ARN returned")?
        .to_string())
}

/// A table as the CDK stack declares it: `key` its partition key, `ttl` its time-to-live
/// attribute, and, for a table functions keep in memory (revocations, API keys, department
/// settings), the `by-update` index they poll.
pub async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
    key_attribute: &str,
    ttl: Option<&str>,
    update_index: bool,
) -> Result<(), BoxError> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    };
    let failed =
        |what: &'static str| move |e: String| -> BoxError { format!("{what} {name}: {e}").into() };
    let attribute = |name: &str, kind: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(|e| failed("define table")(e.to_string()))
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| failed("define table")(e.to_string()))
    };
    let index = GlobalSecondaryIndex::builder()
        .index_name(gateway_shared::mirror::UPDATE_INDEX)
        .key_schema(key(
            gateway_shared::mirror::UPDATE_PARTITION_ATTRIBUTE,
            KeyType::Hash,
        )?)
        .key_schema(key(
            gateway_shared::mirror::UPDATED_MS_ATTRIBUTE,
            KeyType::Range,
        )?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| failed("define table")(e.to_string()))?;
    let mut create = dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(key_attribute, ScalarAttributeType::S)?)
        .key_schema(key(key_attribute, KeyType::Hash)?);
    if update_index {
        create = create
            .attribute_definitions(attribute(
                gateway_shared::mirror::UPDATE_PARTITION_ATTRIBUTE,
                ScalarAttributeType::S,
            )?)
            .attribute_definitions(attribute(
                gateway_shared::mirror::UPDATED_MS_ATTRIBUTE,
                ScalarAttributeType::N,
            )?)
            .global_secondary_indexes(index);
    }
    let created = create.send().await;
    match created {
        Ok(_) => {}
        // A stack restarted against the same moto (AWS_ENDPOINT_URL) finds its table as it left it.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => {
            return Err(failed("create table")(
                aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
            ));
        }
    }
    let Some(ttl) = ttl else {
        return Ok(());
    };
    dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(ttl)
                .enabled(true)
                .build()
                .map_err(|e| failed("define time to live")(e.to_string()))?,
        )
        .send()
        .await
        .map_err(|e| {
            failed("set time to live")(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
        })?;
    Ok(())
}

/// An SES identity for `address`, verified (moto verifies at once), so invitations can be sent from it.
pub async fn verify_mail_identity(
    ses: &aws_sdk_sesv2::Client,
    address: &str,
) -> Result<(), BoxError> {
    let created = ses
        .create_email_identity()
        .email_identity(address)
        .send()
        .await;
    if created
        .as_ref()
        .err()
        .and_then(|e| e.as_service_error())
        .is_some_and(|e| e.is_already_exists_exception())
    {
        return Ok(());
    }
    created.map_err(|e| -> BoxError {
        format!(
            "create SES identity {address}: {}",
            aws_sdk_sesv2::error::DisplayErrorContext(e)
        )
        .into()
    })?;
    Ok(())
}

/// The bootstrap administrator: e-mail verified, in `gateway-admins`, with a temporary password the
/// caller mails. Answers false when the user exists already (a stack restarted against the same moto):
/// nothing is changed then, as the stack's custom resource changes nothing after its creation.
pub async fn create_admin(
    cognito: &Cognito,
    pool: &UserPool,
    username: &str,
    email: &str,
    password: &gateway_shared::secrets::Secret,
) -> Result<bool, BoxError> {
    let created = cognito
        .admin_create_user()
        .user_pool_id(&pool.user_pool_id)
        .username(username)
        .temporary_password(password.expose())
        .message_action(MessageActionType::Suppress)
        .user_attributes(
            AttributeType::builder()
                .name("email")
                .value(email)
                .build()?,
        )
        .user_attributes(
            AttributeType::builder()
                .name("email_verified")
                .value("true")
                .build()?,
        )
        .send()
        .await;
    if created
        .as_ref()
        .err()
        .and_then(|e| e.as_service_error())
        .is_some_and(|e| e.is_username_exists_exception())
    {
        return Ok(false);
    }
    created.map_err(sdk_error("create the bootstrap administrator"))?;
    cognito
        .admin_add_user_to_group()
        .user_pool_id(&pool.user_pool_id)
        .username(username)
        .group_name("gateway-admins")
        .send()
        .await
        .map_err(sdk_error(
            "add the bootstrap administrator to gateway-admins",
        ))?;
    Ok(true)
}
