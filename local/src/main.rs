//! The local stack: every Lambda handler in one process behind an API Gateway REST emulation, AWS
//! services through the real AWS SDK against moto, and bundled mock providers, with no AWS account and
//! no Docker. Run it with `./local/run.sh`; what it deploys comes from `config/gateway.json` (its `dev`
//! environment, as the CDK app reads it), local settings from environment variables (see README).
//!
//! A start runs in phases, each a function below: take every port, start AWS (moto), provision
//! identity and secrets, start provisioning, the audit trail, the upstreams, the queue transport, then
//! the routes, the authorizer and the scheduler, serve, sign the demo user in, and publish the state
//! file that says the stack is up. Each function gets its own environment, built as the CDK app builds
//! it (`environments`), and recorded in the state file.

mod apigw;
mod control;
mod environments;
mod event_sources;
mod faults;
mod mock;
mod moto;
mod ports;
mod resources;
mod schedule;
mod settings;
mod tls;
mod usage_plans;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use aws_credential_types::Credentials;
use axum::serve::ListenerExt;
use gateway_local::state::{
    AuditBodies, Buckets, DemoUser, Keys, Provisioning, Queues, RequestQueue, StackState,
};
use gateway_shared::audit::lifecycle::Invocations;
use gateway_shared::audit::{AuditBuffer, BodiesConfig, SqsDelivery};
use gateway_shared::budgets::settings::PlanLimits;
use gateway_shared::providers::upstream::CredentialSpec;
use gateway_shared::proxy::{Route, RouteConfig};
use gateway_shared::scopes::Policy;
use gateway_shared::usage_plans::DeployedPlan;
use gateway_shared::Provider;
use tokio::net::TcpListener;

use crate::environments::Environments;
use crate::resources::{BoxError, UserPool};
use crate::settings::{local_provider, LocalSettings};

const REPLY_QUEUE_PREFIX: &str = "llm-gateway-reply-";

#[tokio::main]
async fn main() {
    gateway_shared::telemetry::init();
    if let Err(error) = run().await {
        eprintln!("local stack failed: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let local = LocalSettings::from_env()?;
    std::fs::create_dir_all(&local.dir)?;
    let state_file = local.state_file();
    let _ = std::fs::remove_file(&state_file);

    let mut listeners = Listeners::bind(&local).await?;
    let mut aws = Aws::start(&local).await?;
    let policy = gateway_shared::proxy::load_policy(local.policy_file.as_deref())?;
    let deployment = &local.deployment;
    let pool = resources::create_user_pool(
        &aws.cognito(),
        &deployment.prefix(),
        &policy,
        deployment.config.departments.keys().map(String::as_str),
    )
    .await?;
    let secrets = Secrets::provision(&local, &aws.sdk).await?;
    let mut environments = Environments::default();
    let audit = start_audit_trail(&local, &aws, &mut environments).await?;
    let identity = start_identity(&local, &aws, &pool).await?;
    let directory = environments::DirectoryInputs {
        user_pool_id: &pool.user_pool_id,
        department_group_prefix: policy.department_group_prefix(),
        revocation_table: &identity.revocation_table,
        mail_from: Some(&identity.mail_from),
        audit_queue_url: &audit.queue_url,
    };
    let provisioning =
        start_provisioning(&local, &aws, &directory, &audit, &mut environments).await?;
    let upstreams = start_upstreams(std::mem::take(&mut listeners.mocks), &local, &secrets)?;
    let queue_transport = start_queue_transport(
        &local,
        &aws,
        &audit,
        &secrets,
        &upstreams,
        &mut environments,
    )
    .await?;
    let (routes, audit_bodies) = build_routes(
        &local,
        &aws,
        &audit,
        &secrets,
        &upstreams,
        &queue_transport,
        &mut environments,
    )
    .await?;
    let authorizer = build_authorizer(
        &local,
        &aws,
        &pool,
        &secrets,
        &audit,
        &identity,
        &mut environments,
    )
    .await?;
    let usage_plans = secrets.usage_plans_setting();
    let scheduler = start_scheduler(
        &local,
        &aws,
        &directory,
        &audit,
        &provisioning.reports_bucket,
        &usage_plans,
        &mut environments,
    )?;
    let admin = build_admin_api(
        &local,
        &aws,
        &directory,
        &provisioning,
        &audit,
        &usage_plans,
        &mut environments,
    )?;
    let served = serve(
        listeners,
        &local,
        control::Control {
            audit_digest: audit.digest_job.clone(),
            scheduler,
        },
        apigw::Gateway {
            region: local.region.clone(),
            function_timeout: local.function_timeout,
            authorizer,
            routes,
            admin,
            usage_plans: secrets.usage_plans(&local, &aws.sdk),
        },
    )?;
    let (demo_user, token) = sign_in_demo_user(&aws, &pool, &policy).await?;

    let state = StackState {
        base_url: served.base_url,
        https_base_url: served.https_base_url,
        control_url: served.control_url,
        ca_bundle: served.ca_bundle,
        aws_endpoint_url: aws.endpoint.clone(),
        region: local.region.clone(),
        issuer: format!(
            "https://cognito-idp.{}.amazonaws.com/{}",
            local.region, pool.user_pool_id
        ),
        jwks_url: jwks_url(&aws, &pool),
        user_pool_id: pool.user_pool_id,
        app_client_id: pool.app_client_id,
        demo_user,
        groups: pool.groups,
        secrets: secrets.secret_ids(),
        upstreams: upstreams.urls,
        mocks: upstreams.mocks,
        upstream_response_timeout_ms: std::env::var("GATEWAY_UPSTREAM_RESPONSE_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(deployment.config.functions.upstream_response_timeout_ms),
        buckets: Buckets {
            audit: audit.bucket.clone(),
            payloads: queue_transport.payload_bucket.clone(),
        },
        audit_bodies: AuditBodies {
            enabled: audit_bodies.capture_limit().is_some(),
            max_bytes: audit_bodies
                .capture_limit()
                .unwrap_or(gateway_shared::audit::bodies::DEFAULT_MAX_BYTES),
        },
        transports: Provider::ALL
            .into_iter()
            .map(|p| (p, local.transport_for(p).as_str().to_string()))
            .collect(),
        queues: Queues {
            audit: audit.queue_url,
            audit_dlq: audit.dlq_url,
            requests: queue_transport
                .queues
                .into_iter()
                .map(|(provider, queues)| (provider, queues.state))
                .collect(),
            reply_prefix: REPLY_QUEUE_PREFIX.into(),
        },
        keys: Keys {
            audit_digest: audit.digest_key,
            audit_bodies: audit.bodies_key.clone(),
        },
        provisioning,
        identity: gateway_local::state::Identity {
            revocation_table: identity.revocation_table.clone(),
            apikey_table: identity.apikey_table.clone(),
            department_table: local.deployment.department_table_name(),
            usage_table: local.deployment.usage_table_name(),
            mail_from: identity.mail_from.clone(),
            mail_messages_url: format!("{}/_local/ses/messages", aws.endpoint),
        },
        functions: environments.into_state(),
    };
    // Written last: its presence means the stack is ready.
    state.write_atomically(&state_file)?;
    print_banner(&state, &token, &state_file.display().to_string());

    shutdown_signal().await;
    aws.stop().await;
    let _ = std::fs::remove_file(&state_file);
    Ok(())
}

/// Every port the stack serves on, taken before anything starts, so that a start with a taken port
/// fails at once and names the port and the setting that moves it. (moto's is checked when it starts.)
struct Listeners {
    http: TcpListener,
    https: TcpListener,
    control: TcpListener,
    /// The bundled mocks' ports, for providers without a configured endpoint.
    mocks: BTreeMap<Provider, TcpListener>,
}

impl Listeners {
    async fn bind(local: &LocalSettings) -> Result<Self, BoxError> {
        let http = ports::bind(&local.host, local.http_port, "GATEWAY_LOCAL_HTTP_PORT").await?;
        let https = ports::bind(&local.host, local.https_port, "GATEWAY_LOCAL_HTTPS_PORT").await?;
        let control = ports::bind(
            control::HOST,
            local.control_port,
            "GATEWAY_LOCAL_CONTROL_PORT",
        )
        .await?;
        let mut mocks = BTreeMap::new();
        for provider in Provider::ALL {
            if local.endpoints.contains_key(&provider) {
                continue;
            }
            let listener = ports::bind(
                &local.host,
                local.mock_ports[&provider],
                local_provider(provider).mock_port_setting,
            )
            .await?;
            mocks.insert(provider, listener);
        }
        Ok(Listeners {
            http,
            https,
            control,
            mocks,
        })
    }
}

/// AWS as the functions see it: moto (unless `AWS_ENDPOINT_URL` names another endpoint) and one SDK
/// configuration for every client.
struct Aws {
    sdk: aws_config::SdkConfig,
    endpoint: String,
    moto: Option<tokio::process::Child>,
}

impl Aws {
    async fn start(local: &LocalSettings) -> Result<Self, BoxError> {
        let moto = match &local.aws_endpoint_url {
            Some(_) => None,
            None => Some(moto::start(local).await?),
        };
        let endpoint = local.aws_endpoint();
        let credentials = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(id), Ok(secret)) => Credentials::new(
                id,
                secret,
                std::env::var("AWS_SESSION_TOKEN").ok(),
                None,
                "environment",
            ),
            _ => Credentials::new("test", "test", None, None, "local-stack"),
        };
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(local.region.clone()))
            .endpoint_url(&endpoint)
            .credentials_provider(credentials)
            .load()
            .await;
        Ok(Aws {
            sdk,
            endpoint,
            moto,
        })
    }

    fn cognito(&self) -> aws_sdk_cognitoidentityprovider::Client {
        aws_sdk_cognitoidentityprovider::Client::new(&self.sdk)
    }

    fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::new(&self.sdk)
    }

    fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk)
    }

    async fn stop(&mut self) {
        if let Some(child) = self.moto.as_mut() {
            let _ = child.kill().await;
        }
    }
}

/// The upstream keys (given, or random for the mocks) stored in Secrets Manager, and the departments'
/// usage-plan keys.
struct Secrets {
    /// Department (or `default`) -> its usage-plan key value, as the authorizer's secret holds them.
    usage_keys: BTreeMap<String, String>,
    /// Per key-taking provider: the secret's id and the key the mock expects.
    upstream_keys: BTreeMap<Provider, (String, String)>,
    usage_keys_secret: String,
    /// Department -> its usage plan in the local API Gateway (moto), made from the configuration.
    usage_plans: BTreeMap<String, DeployedPlan>,
}

impl Secrets {
    async fn provision(
        local: &LocalSettings,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, BoxError> {
        let client = aws_sdk_secretsmanager::Client::new(sdk);
        let mut upstream_keys = BTreeMap::new();
        for provider in Provider::ALL {
            let CredentialSpec::ApiKey { .. } = provider.upstream().credential else {
                continue;
            };
            let name = provider.route_prefix();
            let key = local
                .keys
                .get(&provider)
                .cloned()
                .unwrap_or_else(|| format!("local-{name}-{}", uuid::Uuid::new_v4().simple()));
            let secret_id =
                resources::put_secret(&client, &format!("llm-gateway/local/{name}-api-key"), &key)
                    .await?;
            upstream_keys.insert(provider, (secret_id, key));
        }
        let usage_keys: BTreeMap<String, String> = local
            .deployment
            .config
            .departments
            .keys()
            .map(String::as_str)
            // `default`: callers in no configured department, as the stack's default usage plan.
            .chain(["default"])
            .map(|d| {
                (
                    d.to_string(),
                    format!("usage-key-{d}-{}", uuid::Uuid::new_v4().simple()),
                )
            })
            .collect();
        let usage_keys_secret = resources::put_secret(
            &client,
            "llm-gateway/local/department-usage-keys",
            &serde_json::to_string(&usage_keys)?,
        )
        .await?;
        let apigateway = aws_sdk_apigateway::Client::new(sdk);
        let mut usage_plans = BTreeMap::new();
        for (department, config) in &local.deployment.config.departments {
            let limits = PlanLimits {
                rate_limit: config.rate_limit,
                burst_limit: config.burst_limit,
                quota_per_day: config.quota_per_day,
            };
            let name = format!("{}-{department}", local.deployment.prefix());
            let id = resources::create_usage_plan(&apigateway, &name, &limits).await?;
            usage_plans.insert(department.clone(), DeployedPlan::new(id, limits));
        }
        Ok(Secrets {
            usage_keys,
            upstream_keys,
            usage_keys_secret,
            usage_plans,
        })
    }

    /// `GATEWAY_USAGE_PLANS`: each department's plan id and configured limits, as the stack sets it.
    fn usage_plans_setting(&self) -> String {
        serde_json::to_string(&self.usage_plans).unwrap_or_default()
    }

    /// The usage plans the stack declares: one per department, and `default` (the stage's throttle).
    /// The departments' limits are read from the local API Gateway's plans (moto) every second, so a
    /// change the admin API makes there applies, as API Gateway applies it.
    fn usage_plans(
        &self,
        local: &LocalSettings,
        sdk: &aws_config::SdkConfig,
    ) -> usage_plans::UsagePlans {
        if !local.usage_plans {
            return usage_plans::UsagePlans::off();
        }
        let deployment = &local.deployment;
        let limits = |department: &str| match self.usage_plans.get(department) {
            Some(plan) => usage_plans::Limits::from(&plan.limits()),
            None => {
                let stage = &deployment.environment.api.throttle;
                usage_plans::Limits {
                    rate_per_sec: f64::from(stage.rate_limit),
                    burst: stage.burst_limit,
                    quota_per_day: None,
                }
            }
        };
        let plans = usage_plans::UsagePlans::new(
            self.usage_keys
                .iter()
                .map(|(department, key)| (key.clone(), limits(department))),
            std::time::Instant::now(),
        );
        let followed: Vec<(String, String)> = self
            .usage_plans
            .iter()
            .filter_map(|(department, plan)| {
                Some((plan.id.clone(), self.usage_keys.get(department)?.clone()))
            })
            .collect();
        tokio::spawn(usage_plans::follow(
            plans.clone(),
            aws_sdk_apigateway::Client::new(sdk),
            followed,
        ));
        plans
    }

    fn secret_id(&self, provider: Provider) -> Option<String> {
        self.upstream_keys.get(&provider).map(|(id, _)| id.clone())
    }

    fn secret_ids(&self) -> BTreeMap<Provider, String> {
        self.upstream_keys
            .iter()
            .map(|(provider, (secret_id, _))| (*provider, secret_id.clone()))
            .collect()
    }
}

/// The audit trail: queue (+ DLQ) -> audit writer (SQS event source) -> S3; the routes' bodies,
/// sealed under the bodies key, beside the events; and the hourly digest job (its schedule, and the
/// control endpoint that runs it now).
struct AuditTrail {
    sdk: aws_config::SdkConfig,
    sqs: aws_sdk_sqs::Client,
    bucket: String,
    queue_url: String,
    dlq_url: String,
    digest_job: Arc<audit_digest::Job>,
    /// ARN of the digest signing key.
    digest_key: String,
    /// ARN of the key the routes seal bodies under.
    bodies_key: String,
}

impl AuditTrail {
    /// A function's execution environment as far as auditing goes: its own buffer, delivered to the
    /// audit queue after each of its invocations ends, as the Lambda extension does.
    fn function(&self) -> Arc<Invocations> {
        let invocations = Invocations::new(AuditBuffer::new(SqsDelivery::new(
            self.sqs.clone(),
            self.queue_url.clone(),
        )));
        invocations.flush_after_each();
        invocations
    }

    /// A route's execution environment: as [`Self::function`], with the route's bodies sealed and
    /// stored at each flush before its events leave (as `run_from_env` builds it in Lambda).
    fn route_function(&self, bodies: &BodiesConfig) -> Arc<Invocations> {
        let delivery = bodies.delivery(
            Box::new(SqsDelivery::new(self.sqs.clone(), self.queue_url.clone())),
            &self.sdk,
        );
        let invocations = Invocations::new(AuditBuffer::new(delivery));
        invocations.flush_after_each();
        invocations
    }
}

/// The audit queue's visibility timeout here: a crashed writer's batch is retried within the tests'
/// patience (the stack declares six times the writer's timeout, Lambda's advice).
const LOCAL_AUDIT_VISIBILITY_SECS: u32 = 30;
/// Receives before an audit message is dead-lettered, as the stack declares.
const AUDIT_MAX_RECEIVES: u32 = 5;

async fn start_audit_trail(
    local: &LocalSettings,
    aws: &Aws,
    environments: &mut Environments,
) -> Result<AuditTrail, BoxError> {
    let sqs = aws.sqs();
    let deployment = &local.deployment;
    let bucket = deployment.resource_name("audit");
    resources::create_audit_bucket(&aws.s3(), &bucket, i32::from(local.audit_retention_days))
        .await?;
    let digest_key = resources::create_digest_key(&aws_sdk_kms::Client::new(&aws.sdk)).await?;
    let digest_env = environments.record(
        "audit-digest",
        environments::audit_digest(
            &local.region,
            deployment,
            &bucket,
            &digest_key,
            local.function_timeout.as_secs(),
        ),
    );
    let digest_job = Arc::new(audit_digest::Job::from_config(
        audit_digest::DigestConfig::from_settings(digest_env)?,
        &aws.sdk,
    ));
    tokio::spawn(schedule::hourly_audit_digest(digest_job.clone()));
    let bodies_key = resources::create_audit_bodies_key(&aws.kms()).await?;
    let (queue, dlq) = resources::create_queue_with_dlq(
        &sqs,
        &deployment.audit_queue_name(),
        LOCAL_AUDIT_VISIBILITY_SECS,
        AUDIT_MAX_RECEIVES,
    )
    .await?;
    let writer_env = environments.record(
        "audit-writer",
        environments::audit_writer(&local.region, deployment, &bucket),
    );
    let writer = Arc::new(audit_writer::Writer::from_config(
        audit_writer::WriterConfig::from_settings(writer_env)?,
        &aws.sdk,
    ));
    tokio::spawn(event_sources::sqs_event_source(
        sqs.clone(),
        queue.url.clone(),
        queue.arn.clone(),
        move |event| {
            let writer = writer.clone();
            async move { faults::write_audit_with_injected_crashes(&writer, event).await }
        },
    ));
    Ok(AuditTrail {
        sdk: aws.sdk.clone(),
        sqs,
        bucket,
        queue_url: queue.url,
        dlq_url: dlq.url,
        digest_job,
        digest_key,
        bodies_key,
    })
}

/// The authorizer, as API Gateway's REQUEST authorizer would run it.
async fn build_authorizer(
    local: &LocalSettings,
    aws: &Aws,
    pool: &UserPool,
    secrets: &Secrets,
    audit: &AuditTrail,
    identity: &Identity,
    environments: &mut Environments,
) -> Result<apigw::Function<authorizer::State>, BoxError> {
    let invocations = audit.function();
    let env = environments.record(
        "authorizer",
        environments::authorizer(
            &local.region,
            &local.deployment,
            environments::AuthorizerInputs {
                user_pool_id: &pool.user_pool_id,
                app_client_id: &pool.app_client_id,
                jwks_url: &jwks_url(aws, pool),
                usage_keys_secret_id: &secrets.usage_keys_secret,
                audit_queue_url: &audit.queue_url,
                revocation_table: &identity.revocation_table,
            },
        ),
    );
    Ok(apigw::Function {
        handler: authorizer::State::from_config(
            authorizer::AuthorizerConfig::from_settings(env)?,
            &aws.sdk,
            Arc::new(invocations.buffer().clone()),
        )
        .await?,
        invocations,
    })
}

/// The scheduler, run by its (emulated) rules and by the control endpoints.
fn start_scheduler(
    local: &LocalSettings,
    aws: &Aws,
    directory: &environments::DirectoryInputs<'_>,
    audit: &AuditTrail,
    reports_bucket: &str,
    usage_plans: &str,
    environments: &mut Environments,
) -> Result<control::Scheduled, BoxError> {
    let env = environments.record(
        "scheduler",
        environments::scheduler(
            &local.region,
            &local.deployment,
            REPLY_QUEUE_PREFIX,
            directory,
            (&audit.bucket, reports_bucket),
            usage_plans,
        ),
    );
    let invocations = audit.function();
    let scheduler = Arc::new(
        scheduler::Scheduler::new(
            scheduler::SchedulerConfig::from_settings(env)?,
            Arc::new(aws.sqs()),
        )
        .with_users(&aws.sdk, Arc::new(invocations.buffer().clone()))
        .with_budget_alerts(&aws.sdk)
        .with_rollups(&aws.sdk)
        .with_usage_plans(&aws.sdk, Arc::new(invocations.buffer().clone())),
    );
    let scheduled = control::Scheduled {
        scheduler,
        invocations,
    };
    tokio::spawn(schedule::every(
        scheduled.clone(),
        schedule::REPLY_QUEUE_SWEEP,
    ));
    tokio::spawn(schedule::every(scheduled.clone(), schedule::BUDGET_ALERTS));
    tokio::spawn(schedule::every(scheduled.clone(), schedule::USAGE_ROLLUP));
    tokio::spawn(schedule::every(scheduled.clone(), schedule::USAGE_PLANS));
    tokio::spawn(schedule::daily_user_dates(scheduled.clone()));
    Ok(scheduled)
}

/// The admin API, as its Lambda function runs behind the authorizer.
fn build_admin_api(
    local: &LocalSettings,
    aws: &Aws,
    directory: &environments::DirectoryInputs<'_>,
    provisioning: &Provisioning,
    audit: &AuditTrail,
    usage_plans: &str,
    environments: &mut Environments,
) -> Result<apigw::Function<admin_api::AdminApi>, BoxError> {
    let env = environments.record(
        "admin-api",
        environments::admin_api(
            &local.region,
            &local.deployment,
            directory,
            &environments::ProvisioningInputs {
                bucket: &provisioning.bucket,
                reports_bucket: &provisioning.reports_bucket,
            },
            usage_plans,
        ),
    );
    let invocations = audit.function();
    Ok(apigw::Function {
        handler: admin_api::AdminApi::new(
            admin_api::AdminConfig::from_settings(env)?,
            &aws.sdk,
            Arc::new(invocations.buffer().clone()),
        )?,
        invocations,
    })
}

/// What identity adds to the pool: the revocation table the authorizer reads, and a verified SES
/// identity the invitations come from (moto keeps the messages: `identity.mail_messages_url`).
struct Identity {
    revocation_table: String,
    apikey_table: String,
    mail_from: String,
}

async fn start_identity(
    local: &LocalSettings,
    aws: &Aws,
    pool: &UserPool,
) -> Result<Identity, BoxError> {
    let deployment = &local.deployment;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws.sdk);
    let revocation_table = deployment.resource_name("revocations");
    resources::create_table(
        &dynamodb,
        &revocation_table,
        "sub",
        Some("expires_at"),
        true,
    )
    .await?;
    // Keys keep their records past `expires_at` (no time to live): listed, and named in refusals.
    let apikey_table = deployment.apikey_table_name();
    resources::create_table(&dynamodb, &apikey_table, "key_id", None, true).await?;
    // Budgets: the departments' settings (mirrored by the routes) and the usage counters.
    resources::create_table(
        &dynamodb,
        &deployment.department_table_name(),
        "department",
        None,
        true,
    )
    .await?;
    resources::create_table(
        &dynamodb,
        &deployment.usage_table_name(),
        "counter",
        Some("expires_at"),
        false,
    )
    .await?;
    let mail_from = format!("{}@example.com", deployment.prefix());
    resources::verify_mail_identity(&aws_sdk_sesv2::Client::new(&aws.sdk), &mail_from).await?;
    // The first administrator, as the stack's custom resource creates it: invited by mail.
    if let Some(admin) = &deployment.environment.identity.bootstrap_admin {
        let password = gateway_shared::mail::temporary_password()
            .map_err(|_| "no temporary password could be generated")?;
        let created = resources::create_admin(
            &aws.cognito(),
            pool,
            &admin.username,
            &admin.email,
            &password,
        )
        .await?;
        if created {
            gateway_shared::mail::Mailer::new(&aws.sdk, mail_from.clone(), None)
                .invite(
                    &gateway_shared::mail::Invitee {
                        username: &admin.username,
                        name: &admin.username,
                        email: &admin.email,
                    },
                    &password,
                )
                .await?;
        }
    }
    Ok(Identity {
        revocation_table,
        apikey_table,
        mail_from,
    })
}

/// Bulk provisioning: the provisioning and reports buckets, the age identity in Secrets Manager, and
/// the provisioner behind the bucket's (emulated) EventBridge "Object Created" events for `incoming/`
/// and `dry-run/`.
async fn start_provisioning(
    local: &LocalSettings,
    aws: &Aws,
    directory: &environments::DirectoryInputs<'_>,
    audit: &AuditTrail,
    environments: &mut Environments,
) -> Result<Provisioning, BoxError> {
    let deployment = &local.deployment;
    let bucket = deployment.resource_name("provisioning");
    let reports_bucket = deployment.resource_name("reports");
    resources::create_bucket(&aws.s3(), &bucket).await?;
    resources::create_bucket(&aws.s3(), &reports_bucket).await?;
    let (_, identity) = provisioner::decrypt::ProvisioningKey::generate();
    let secret_id = resources::put_secret(
        &aws_sdk_secretsmanager::Client::new(&aws.sdk),
        &format!("{}/provisioning-identity", deployment.prefix()),
        &identity,
    )
    .await?;
    let env = environments.record(
        "provisioner",
        environments::provisioner(
            &local.region,
            deployment,
            directory,
            &environments::ProvisioningInputs {
                bucket: &bucket,
                reports_bucket: &reports_bucket,
            },
            &secret_id,
        ),
    );
    let invocations = audit.function();
    let provisioner = Arc::new(
        provisioner::Provisioner::from_config(
            provisioner::ProvisionerConfig::from_settings(env)?,
            &aws.sdk,
            Arc::new(invocations.buffer().clone()),
        )
        .await?,
    );
    let recipient = provisioner.recipient();
    tokio::spawn(event_sources::s3_object_created(
        aws.s3(),
        bucket.clone(),
        vec![
            provisioner::APPLY_PREFIX.to_string(),
            provisioner::DRY_RUN_PREFIX.to_string(),
        ],
        move |event| {
            let provisioner = provisioner.clone();
            let invocations = invocations.clone();
            async move {
                let _invocation = invocations.begin();
                let now = gateway_shared::audit::clock::now_millis();
                if let Err(error) = provisioner.handle(event, now).await {
                    tracing::error!(%error, "provisioning run failed");
                }
            }
        },
    ));
    Ok(Provisioning {
        bucket,
        reports_bucket,
        recipient,
    })
}

/// Where each route sends its requests, and which of those are bundled mocks.
struct Upstreams {
    urls: BTreeMap<Provider, String>,
    mocks: BTreeMap<Provider, String>,
}

/// Starts a mock for every provider without a configured endpoint; the mock expects the key the
/// gateway must inject (SigV4 providers: none).
fn start_upstreams(
    mock_listeners: BTreeMap<Provider, TcpListener>,
    local: &LocalSettings,
    secrets: &Secrets,
) -> Result<Upstreams, BoxError> {
    let mut urls = local.endpoints.clone();
    let mut mocks = BTreeMap::new();
    for (provider, listener) in mock_listeners {
        let url = format!("http://{}", listener.local_addr()?);
        let router = mock::router(mock::MockState {
            provider,
            recorder: mock::Recorder::default(),
            expected_key: secrets
                .upstream_keys
                .get(&provider)
                .map(|(_, key)| key.clone()),
        });
        tokio::spawn(async move { axum::serve(listener.tap_io(no_delay), router).await });
        mocks.insert(provider, url.clone());
        urls.insert(provider, url);
    }
    Ok(Upstreams { urls, mocks })
}

fn jwks_url(aws: &Aws, pool: &UserPool) -> String {
    format!(
        "{}/{}/.well-known/jwks.json",
        aws.endpoint, pool.user_pool_id
    )
}

/// A provider's request queue as the stack made it.
struct ProviderQueues {
    url: String,
    state: RequestQueue,
}

/// The queue transport as the configuration (or `GATEWAY_TRANSPORT`) has it: the payload bucket, a
/// request queue (+ DLQ) per queued provider, and the dispatcher behind an SQS event source on each.
struct QueueTransport {
    payload_bucket: String,
    queues: BTreeMap<Provider, ProviderQueues>,
}

/// The queues exist before the dispatcher is built, since it trusts messages only from the queue URLs
/// it is given.
async fn start_queue_transport(
    local: &LocalSettings,
    aws: &Aws,
    audit: &AuditTrail,
    secrets: &Secrets,
    upstreams: &Upstreams,
    environments: &mut Environments,
) -> Result<QueueTransport, BoxError> {
    let sqs = aws.sqs();
    let deployment = &local.deployment;
    let payload_bucket = deployment.resource_name("payloads");
    resources::create_payload_bucket(
        &aws.s3(),
        &payload_bucket,
        i32::from(deployment.environment.payload_expiry_days),
    )
    .await?;
    let mut created = Vec::new();
    for provider in local.queued() {
        let (queue, dlq) = resources::create_queue_with_dlq(
            &sqs,
            &deployment.request_queue_name(provider),
            local.dispatch_visibility_secs,
            local.dispatch_max_receives,
        )
        .await?;
        created.push((provider, queue, dlq));
    }
    let mut queues = BTreeMap::new();
    if created.is_empty() {
        return Ok(QueueTransport {
            payload_bucket,
            queues,
        });
    }
    let queue_urls: Vec<(Provider, String)> = created
        .iter()
        .map(|(provider, queue, _)| (*provider, queue.url.clone()))
        .collect();
    let queued_upstreams: Vec<(Provider, String, Option<String>)> = created
        .iter()
        .map(|(provider, _, _)| {
            (
                *provider,
                upstreams.urls[provider].clone(),
                secrets.secret_id(*provider),
            )
        })
        .collect();
    let dispatcher_env = environments.record(
        "dispatcher",
        environments::dispatcher(
            &local.region,
            deployment,
            environments::DispatcherInputs {
                queue_urls: &queue_urls,
                upstreams: &queued_upstreams,
                reply_prefix: REPLY_QUEUE_PREFIX,
                payload_bucket: &payload_bucket,
                visibility_secs: local.dispatch_visibility_secs,
                max_receives: local.dispatch_max_receives,
                audit_queue_url: &audit.queue_url,
            },
        ),
    );
    let invocations = audit.function();
    let dispatcher = Arc::new(apigw::Function {
        handler: dispatcher::Dispatcher::from_config(
            dispatcher::DispatcherConfig::from_settings(dispatcher_env)?,
            &aws.sdk,
            Arc::new(invocations.buffer().clone()),
        )?,
        invocations,
    });
    for (provider, queue, dlq) in created {
        let dispatcher = dispatcher.clone();
        tokio::spawn(event_sources::sqs_event_source(
            sqs.clone(),
            queue.url.clone(),
            queue.arn.clone(),
            move |event| {
                let dispatcher = dispatcher.clone();
                async move {
                    let _invocation = dispatcher.invocations.begin();
                    faults::dispatch_with_injected_crashes(&dispatcher.handler, event).await
                }
            },
        ));
        queues.insert(
            provider,
            ProviderQueues {
                url: queue.url.clone(),
                state: RequestQueue {
                    url: queue.url,
                    dlq: dlq.url,
                },
            },
        );
    }
    Ok(QueueTransport {
        payload_bucket,
        queues,
    })
}

/// One route per provider, on its transport, prepared (reply queue, secrets) as a warm execution
/// environment would be. Returns the routes and how they record bodies (the same for every route).
#[allow(clippy::too_many_arguments)]
async fn build_routes(
    local: &LocalSettings,
    aws: &Aws,
    audit: &AuditTrail,
    secrets: &Secrets,
    upstreams: &Upstreams,
    queue_transport: &QueueTransport,
    environments: &mut Environments,
) -> Result<(HashMap<Provider, apigw::Function<Route>>, BodiesConfig), BoxError> {
    let mut routes = HashMap::new();
    let mut bodies = None;
    for provider in Provider::ALL {
        let secret_id = secrets.secret_id(provider);
        let env = environments::route(
            &local.region,
            &local.deployment,
            provider,
            environments::RouteInputs {
                transport: local.transport_for(provider),
                upstream_url: &upstreams.urls[&provider],
                secret_id: secret_id.as_deref(),
                audit_queue_url: &audit.queue_url,
                audit_bucket: &audit.bucket,
                bodies_key: &audit.bodies_key,
                queue: queue_transport.queues.get(&provider).map(|queue| {
                    environments::QueueRoute {
                        request_queue_url: &queue.url,
                        reply_prefix: REPLY_QUEUE_PREFIX,
                        payload_bucket: &queue_transport.payload_bucket,
                    }
                }),
            },
        );
        let env = environments.record(provider.route_prefix(), env);
        let config = RouteConfig::from_settings(provider, env)?;
        let invocations = audit.route_function(&config.audit_bodies);
        let route = Route::from_config(&config, &aws.sdk, Arc::new(invocations.buffer().clone()))?;
        let route = gateway_shared::proxy::with_budgets(route, env, &aws.sdk).await?;
        route.prepare().await;
        bodies = Some(config.audit_bodies.clone());
        routes.insert(
            provider,
            apigw::Function {
                handler: route,
                invocations,
            },
        );
    }
    let bodies = bodies.ok_or("no provider to route")?;
    Ok((routes, bodies))
}

/// Where the stack answers.
struct Served {
    base_url: String,
    https_base_url: String,
    control_url: String,
    ca_bundle: String,
}

/// The gateway's client ports (HTTP and HTTPS) carry API Gateway's surface only; the control endpoints
/// have their own loopback listener.
fn serve(
    listeners: Listeners,
    local: &LocalSettings,
    control: control::Control,
    gateway: apigw::Gateway,
) -> Result<Served, BoxError> {
    let router = axum::Router::new()
        .fallback(apigw::handle)
        .with_state(Arc::new(gateway));
    let control_url = format!("http://{}", listeners.control.local_addr()?);
    let control_router = control::router(control);
    let control = listeners.control;
    tokio::spawn(async move { axum::serve(control.tap_io(no_delay), control_router).await });

    let base_url = format!("http://{}", listeners.http.local_addr()?);
    let https_base_url = format!("https://localhost:{}", listeners.https.local_addr()?.port());
    let certificate = tls::self_signed(&local.dir.join("tls"))?;
    let http_router = router.clone();
    let http = listeners.http;
    tokio::spawn(async move {
        axum::serve(
            http.tap_io(no_delay),
            http_router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    tokio::spawn(tls::serve(listeners.https, certificate.acceptor, router));
    Ok(Served {
        base_url,
        https_base_url,
        control_url,
        ca_bundle: certificate.cert_path.canonicalize()?.display().to_string(),
    })
}

/// Responses leave as they are written: API Gateway and the providers do not hold a small write back
/// for the peer's ACK (Nagle), and a 40 ms delayed-ACK stall here would be measured as the gateway's.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "TCP_NODELAY not set");
    }
}

/// The demo user (every scope, department engineering), signed in for the banner's token.
async fn sign_in_demo_user(
    aws: &Aws,
    pool: &UserPool,
    policy: &Policy,
) -> Result<(DemoUser, String), BoxError> {
    let password = format!("Demo-{}!a1", uuid::Uuid::new_v4().simple());
    let groups = vec![
        "gateway-all".to_string(),
        format!("{}engineering", policy.department_group_prefix()),
    ];
    let token = resources::create_user_and_sign_in(
        &aws.cognito(),
        pool,
        "demo",
        &password,
        &groups,
        "engineering",
    )
    .await?;
    Ok((
        DemoUser {
            username: "demo".into(),
            password,
            groups,
        },
        token,
    ))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

fn print_banner(state: &StackState, token: &str, state_file: &str) {
    let base = &state.base_url;
    let https = &state.https_base_url;
    let ca = &state.ca_bundle;
    let region = &state.region;
    println!(
        r#"
LLM gateway local stack is up.
  gateway (HTTP):   {base}
  gateway (HTTPS):  {https}   (self-signed CA bundle: {ca})
  AWS (moto):       {aws}
  control:          {control}   (local only: /_local/metrics, /_local/sweep-reply-queues, /_local/audit-digest)
  state file:       {state_file}

A fresh access token for the demo user (groups gateway-all, dept-engineering; valid 1 hour):
export GATEWAY_TOKEN='{token}'

Each Python snippet below is self-contained: paste it into python3 with GATEWAY_TOKEN exported.

# Azure OpenAI (openai)
import os
from openai import AzureOpenAI
client = AzureOpenAI(azure_endpoint="{base}/azure-openai", api_version="2024-10-21", api_key=os.environ["GATEWAY_TOKEN"])
print(client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hello"}}]).choices[0].message.content)

# Bedrock Claude (boto3 >= 1.39, HTTPS required for bearer tokens)
import os
import boto3
os.environ["AWS_BEARER_TOKEN_BEDROCK"] = os.environ["GATEWAY_TOKEN"]
brt = boto3.client("bedrock-runtime", region_name="{region}", endpoint_url="{https}/bedrock-claude", verify="{ca}")
print(brt.converse(modelId="anthropic.claude-3-5-sonnet-20240620-v1:0", messages=[{{"role": "user", "content": [{{"text": "hello"}}]}}])["output"])

# Gemini (google-genai)
import os
from google import genai
client = genai.Client(api_key=os.environ["GATEWAY_TOKEN"], http_options=genai.types.HttpOptions(base_url="{base}/gemini"))
print(client.models.generate_content(model="gemini-2.0-flash", contents="hello").text)

Stop with Ctrl-C."#,
        aws = state.aws_endpoint_url,
        control = state.control_url,
    );
}
