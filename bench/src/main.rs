//! Benchmarks against a running local stack (`bench/run.sh` starts one): prints one JSON document.
//!
//! - `authorizer`: the authorizer handler's time per call, in process, warm (JWKS cached, the user's
//!   revocation record cached: DynamoDB is read once per user per `GATEWAY_REVOCATION_CACHE_SECS`),
//!   with a real Cognito (moto) access token.
//! - `provisioning_validation`: decoding and checking a generated 10,000-row HR file, UTF-8 and CP932.
//! - `gateway_overhead`: the same Azure OpenAI chat request sent to the mock provider directly and through
//!   the gateway (API Gateway emulation, authorizer, route, direct transport), at concurrency 1 and 32;
//!   non-stream latency to the last byte, stream time to first byte. Added latency = gateway - direct.
//!   `gateway_api_key`: the same with an API key instead of a token. `gateway_budgeted`: a user of a
//!   department with budgets (department and user, monthly and per minute, never reached), so every
//!   request reserves on four counters (four conditional updates at once, on moto, a Python emulator).
//! - `cold_start`: each function binary started against a stand-in Lambda runtime API on 127.0.0.1:
//!   time from process start to its first `invocation/next` poll (its init: config, clients, JWKS
//!   prefetch), plus binary size. Lambda's own sandbox start is not included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::types::AuthFlowType;
use futures_util::StreamExt;
use gateway_local::state::StackState;
use gateway_shared::providers::upstream::CredentialSpec;
use gateway_shared::Provider;
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CHAT_PATH: &str = "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let state = StackState::load(&StackState::default_path())?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(state.region.clone()))
        .endpoint_url(&state.aws_endpoint_url)
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let token = sign_in(&sdk, &state).await?;
    let upstream_key = aws_sdk_secretsmanager::Client::new(&sdk)
        .get_secret_value()
        .secret_id(
            state
                .secrets
                .get(&Provider::AzureOpenAi)
                .ok_or("the Azure OpenAI upstream has no key secret")?,
        )
        .send()
        .await?
        .secret_string()
        .unwrap_or_default()
        .to_string();

    let (api_key, budgeted_token) = budget_targets(&sdk, &state).await?;
    let authorizer = bench_authorizer(
        &state,
        &sdk,
        &[("jwt", token.as_str()), ("api_key", api_key.as_str())],
    )
    .await?;
    let provisioning = bench_provisioning_validation()?;
    let cold_start = match std::env::var("GATEWAY_BENCH_BIN_DIR") {
        Ok(dir) => bench_cold_start(&state, &dir).await?,
        Err(_) => json!("skipped: GATEWAY_BENCH_BIN_DIR not set"),
    };

    let mock = state
        .mocks
        .get(&Provider::AzureOpenAi)
        .ok_or("the Azure OpenAI mock is not running")?;
    let CredentialSpec::ApiKey {
        header: upstream_header,
        ..
    } = &Provider::AzureOpenAi.upstream().credential
    else {
        return Err("the Azure OpenAI upstream takes no API key".into());
    };
    let direct = Target {
        url: format!("{mock}{CHAT_PATH}"),
        header: upstream_header.clone(),
        key: upstream_key,
    };
    // The openai SDK's AzureOpenAI client sends its api_key (here the gateway token) as `api-key`.
    let gateway = Target {
        url: format!(
            "{}/{}{CHAT_PATH}",
            state.base_url,
            Provider::AzureOpenAi.route_prefix()
        ),
        header: http::HeaderName::from_static("api-key"),
        key: token,
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()?;
    let mut targets = vec![
        ("direct", direct),
        ("gateway", gateway.clone()),
        (
            "gateway_api_key",
            Target {
                key: api_key,
                ..gateway.clone()
            },
        ),
        (
            "gateway_budgeted",
            Target {
                key: budgeted_token,
                ..gateway.clone()
            },
        ),
    ];
    budgets_apply(&client, &targets[3].1, &sdk, &state).await?;
    // Comparison mode (`bench/run.sh --compare`): LiteLLM's proxy in front of the same mock, on its
    // Azure-compatible route, so every target gets the very same request from the very same client.
    if let Ok(litellm) = std::env::var("GATEWAY_BENCH_LITELLM_URL") {
        targets.push((
            "litellm",
            Target {
                url: format!("{}{CHAT_PATH}", litellm.trim_end_matches('/')),
                header: http::HeaderName::from_static("api-key"),
                key: std::env::var("GATEWAY_BENCH_LITELLM_KEY").unwrap_or_default(),
            },
        ));
    }
    let mut overhead = Vec::new();
    for (concurrency, per_worker) in [(1usize, 400usize), (32, 60)] {
        // Under budgets every request writes DynamoDB, which moto (one Python process, one call at a
        // time) serves far slower than DynamoDB: at concurrency 32 that measures the emulator, so the
        // budgeted target runs at concurrency 1 only.
        let here: Vec<(&str, Target)> = targets
            .iter()
            .filter(|(name, _)| concurrency == 1 || *name != "gateway_budgeted")
            .cloned()
            .collect();
        for stream in [false, true] {
            overhead.push(compare(&client, &here, concurrency, per_worker, stream).await?);
        }
    }
    let sqs_calls = bench_sqs_calls(&client, &gateway, &state.control_url).await?;
    let transport = state.transports.get(&Provider::AzureOpenAi).cloned();
    let report = json!({
        "note": "release build of the local stack; mock upstream on 127.0.0.1; 2 cores shared by client, gateway, moto and mocks",
        "transport": transport,
        "sqs_calls": sqs_calls,
        "authorizer": authorizer,
        "provisioning_validation": provisioning,
        "cold_start": cold_start,
        "gateway_overhead": overhead,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The department whose budgets the `gateway_budgeted` target runs under.
const BUDGETED_DEPARTMENT: &str = "hr";

/// An API key (department sales, no budget) and the token of a user of a department whose budgets
/// apply to every request without ever being reached.
async fn budget_targets(
    sdk: &aws_config::SdkConfig,
    state: &StackState,
) -> Result<(String, String), BoxError> {
    use gateway_shared::budgets::{DepartmentSettings, Limits, SettingsStore};
    let (key, id) = gateway_shared::apikeys::generate()?;
    let now = gateway_shared::audit::clock::now_millis();
    gateway_shared::apikeys::ApiKeys::from_sdk(sdk, state.identity.apikey_table.clone())
        .create(&gateway_shared::apikeys::ApiKeyRecord {
            hash: gateway_shared::apikeys::hash(&key),
            id,
            name: "bench".into(),
            department: "sales".into(),
            scopes: vec!["text:openai".into()],
            created_at: gateway_shared::audit::clock::rfc3339_from_millis(now),
            created_by: "bench".into(),
            expires_at: now / 1000 + 86_400,
            revoked_at: None,
            revoked_by: None,
            rotated_from: None,
            replaced_by: None,
            last_used_at: None,
        })
        .await?;
    let unreachable = Limits {
        tokens_per_minute: Some(1_000_000_000_000),
        monthly_tokens: Some(1_000_000_000_000),
        monthly_cost_usd: Some(1_000_000_000.0),
    };
    SettingsStore::from_sdk(sdk, state.identity.department_table.clone())
        .put(&DepartmentSettings {
            department: BUDGETED_DEPARTMENT.into(),
            budget: unreachable,
            user_budget: unreachable,
            alert_thresholds_percent: Vec::new(),
            ..Default::default()
        })
        .await?;
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(sdk);
    let username = "bench-budgeted";
    let password = "Bench-budget-1!";
    cognito
        .admin_create_user()
        .user_pool_id(&state.user_pool_id)
        .username(username)
        .message_action(aws_sdk_cognitoidentityprovider::types::MessageActionType::Suppress)
        .send()
        .await?;
    cognito
        .admin_set_user_password()
        .user_pool_id(&state.user_pool_id)
        .username(username)
        .password(password)
        .permanent(true)
        .send()
        .await?;
    for group in ["gateway-all", &format!("dept-{BUDGETED_DEPARTMENT}")] {
        cognito
            .admin_add_user_to_group()
            .user_pool_id(&state.user_pool_id)
            .username(username)
            .group_name(group)
            .send()
            .await?;
    }
    let out = cognito
        .admin_initiate_auth()
        .user_pool_id(&state.user_pool_id)
        .client_id(&state.app_client_id)
        .auth_flow(AuthFlowType::AdminUserPasswordAuth)
        .auth_parameters("USERNAME", username)
        .auth_parameters("PASSWORD", password)
        .send()
        .await?;
    let token = out
        .authentication_result()
        .and_then(|r| r.access_token())
        .ok_or("no access token")?
        .to_string();
    // The routes' copy of the settings is at most GATEWAY_SETTINGS_CACHE_SECS old (dev: 5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    Ok((key, token))
}

/// Fails unless a request of the budgeted target reserves on its department's month counter: the
/// benchmark measures budgets at work, not a department without them.
async fn budgets_apply(
    client: &reqwest::Client,
    budgeted: &Target,
    sdk: &aws_config::SdkConfig,
    state: &StackState,
) -> Result<(), BoxError> {
    let body = Arc::new(json!({"messages": [{"role": "user", "content": "budget"}]}).to_string());
    one(client, budgeted, &body, false).await?;
    let month =
        gateway_shared::budgets::counters::month_of(gateway_shared::audit::clock::now_millis());
    let key = gateway_shared::budgets::counters::month_key("d", BUDGETED_DEPARTMENT, &month);
    let (tokens, _, _) =
        gateway_shared::budgets::UsageCounters::from_sdk(sdk, state.identity.usage_table.clone())
            .read(&key)
            .await?;
    if tokens <= 0 {
        return Err(format!("no reservation on {key}: budgets are not in force").into());
    }
    Ok(())
}

async fn sign_in(sdk: &aws_config::SdkConfig, state: &StackState) -> Result<String, BoxError> {
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(sdk);
    let out = cognito
        .admin_initiate_auth()
        .user_pool_id(&state.user_pool_id)
        .client_id(&state.app_client_id)
        .auth_flow(AuthFlowType::AdminUserPasswordAuth)
        .auth_parameters("USERNAME", &state.demo_user.username)
        .auth_parameters("PASSWORD", &state.demo_user.password)
        .send()
        .await?;
    Ok(out
        .authentication_result()
        .and_then(|r| r.access_token())
        .ok_or("no access token")?
        .to_string())
}

async fn bench_authorizer(
    state: &StackState,
    sdk: &aws_config::SdkConfig,
    credentials: &[(&str, &str)],
) -> Result<Value, BoxError> {
    // All of it, region included: in process, nothing else sets it.
    let settings: std::collections::HashMap<String, String> = state
        .functions
        .get("authorizer")
        .ok_or("the stack runs no authorizer")?
        .clone()
        .into_iter()
        .collect();
    let config = authorizer::AuthorizerConfig::from_settings(&settings)?;
    // The authorizer records each allow into its buffer, as in Lambda; delivery (after each
    // invocation) is not part of the handler's time, and is left out here.
    let audit = std::sync::Arc::new(gateway_shared::audit::AuditBuffer::new(
        gateway_shared::audit::LogDelivery,
    ));
    let authorizer_state = authorizer::State::from_config(config, sdk, audit).await?;
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/authorizer.json"
    ))?;
    let mut report = serde_json::Map::new();
    for (name, credential) in credentials {
        let event: authorizer::Request =
            serde_json::from_str(&template.replace("REPLACE_WITH_GATEWAY_TOKEN", credential))?;
        for _ in 0..200 {
            authorizer::handle(&authorizer_state, event.clone()).await?;
        }
        let calls = 5000;
        let mut samples = Vec::with_capacity(calls);
        for _ in 0..calls {
            let event = event.clone();
            let started = Instant::now();
            let answer = authorizer::handle(&authorizer_state, event).await?;
            samples.push(started.elapsed().as_secs_f64() * 1e6);
            if !authorizer::is_allowed(&answer) {
                return Err(format!("the benchmark's {name} was denied").into());
            }
        }
        report.insert(
            name.to_string(),
            json!({"calls": calls, "unit": "microseconds", "per_call": summary(&samples)}),
        );
    }
    Ok(Value::Object(report))
}

/// Decoding and checking a generated 10,000-row HR file (every rule of DESIGN §8 per row), as UTF-8
/// and as CP932 the way Excel in Japan saves it: milliseconds per whole file.
fn bench_provisioning_validation() -> Result<Value, BoxError> {
    const ROWS: usize = 10_000;
    let departments = ["営業部", "人事部", "システム部", "経理部"];
    let mut text = String::from(
        "user_id,name,email,department,job_title,phone,start_date,end_date,status\r\n",
    );
    for i in 0..ROWS {
        text.push_str(&format!(
            "{i:06},山田 太郎{i},user{i}@example.com,{},主任,03-1234-{:04},2023/4/1,{},{}\r\n",
            departments[i % departments.len()],
            i % 10_000,
            if i % 7 == 0 { "2026/03/31" } else { "" },
            if i % 11 == 0 { "inactive" } else { "active" },
        ));
    }
    let (cp932, _, unmappable) = encoding_rs::SHIFT_JIS.encode(&text);
    if unmappable {
        return Err("the generated file is not CP932-encodable".into());
    }
    let mut report = serde_json::Map::new();
    for (name, bytes) in [
        ("utf8", text.as_bytes().to_vec()),
        ("cp932", cp932.into_owned()),
    ] {
        let mut samples = Vec::new();
        for _ in 0..15 {
            let started = Instant::now();
            let parsed = gateway_shared::provisioning::parse(&bytes)?;
            samples.push(started.elapsed().as_secs_f64() * 1e3);
            if parsed.records.len() != ROWS || !parsed.rejected.is_empty() {
                return Err(format!(
                    "{name}: {} records, {} rejected",
                    parsed.records.len(),
                    parsed.rejected.len()
                )
                .into());
            }
        }
        report.insert(
            name.into(),
            json!({"rows": ROWS, "bytes": bytes.len(), "unit": "milliseconds per file", "per_file": summary(&samples)}),
        );
    }
    Ok(Value::Object(report))
}

/// A function's environment as the running stack built it (the state file's `functions`, which is what
/// the CDK stack sets in Lambda), without what the benchmark sets itself (region, log level).
fn function_settings(
    state: &StackState,
    function: &str,
) -> Result<Vec<(String, String)>, BoxError> {
    let env = state
        .functions
        .get(function)
        .ok_or_else(|| format!("the stack runs no {function} function"))?;
    Ok(env
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "AWS_REGION" | "RUST_LOG"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect())
}

/// Starts each function binary `STARTS` times; returns median init time and binary size per function.
async fn bench_cold_start(state: &StackState, dir: &str) -> Result<Value, BoxError> {
    const STARTS: usize = 7;
    let common = [
        ("AWS_REGION", state.region.clone()),
        ("AWS_ENDPOINT_URL", state.aws_endpoint_url.clone()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench".to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ]
    .map(|(name, value)| (name.to_string(), value));
    // Each provider's function crate is named by its route prefix.
    let mut functions = vec![
        ("authorizer", function_settings(state, "authorizer")?),
        ("admin-api", function_settings(state, "admin-api")?),
    ];
    for provider in Provider::ALL {
        functions.push((
            provider.route_prefix(),
            function_settings(state, provider.route_prefix())?,
        ));
    }
    let mut report = serde_json::Map::new();
    for (name, env) in functions {
        let binary = format!("{dir}/{name}");
        let mut samples = Vec::new();
        for _ in 0..STARTS {
            samples.push(init_time_ms(&binary, common.iter().chain(env.iter())).await?);
        }
        let size = std::fs::metadata(&binary)?.len();
        report.insert(
            name.to_string(),
            json!({"init_ms": summary(&samples), "starts": STARTS, "binary_bytes": size}),
        );
    }
    Ok(Value::Object(report))
}

/// Process start to the first `GET /2018-06-01/runtime/invocation/next` on a stand-in runtime API.
async fn init_time_ms<'a>(
    binary: &str,
    env: impl Iterator<Item = &'a (String, String)>,
) -> Result<f64, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?.to_string();
    let mut command = tokio::process::Command::new(binary);
    command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .kill_on_drop(true);
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let started = Instant::now();
    let mut child = command.spawn()?;
    // The functions register their audit extension first (part of init, as in Lambda), then poll.
    let mut held = Vec::new();
    let wait = async {
        loop {
            let (mut stream, _) = listener.accept().await?;
            let mut buf = vec![0u8; 2048];
            let n = stream.read(&mut buf).await?;
            let request = String::from_utf8_lossy(&buf[..n]);
            if request.contains("/runtime/invocation/next") {
                return Ok::<_, BoxError>(started.elapsed());
            }
            if request.contains("/extension/register") {
                let body =
                    r#"{"functionName":"bench","functionVersion":"$LATEST","handler":"bootstrap"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nLambda-Extension-Identifier: bench-extension\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await?;
            }
            // Other calls (the extension's own next-event poll) wait, unanswered, like a quiet Lambda.
            held.push(stream);
        }
    };
    let elapsed = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .map_err(|_| format!("{binary} did not poll the runtime API within 20 s"))??;
    let _ = child.kill().await;
    Ok(elapsed.as_secs_f64() * 1e3)
}

/// SQS API calls the gateway made (route + dispatcher; Lambda's event source polling comes on top),
/// per non-stream request and per streamed response, from the local stack's counter (on its control
/// port, `control_url`).
async fn bench_sqs_calls(
    client: &reqwest::Client,
    gateway: &Target,
    control: &str,
) -> Result<Value, BoxError> {
    const REQUESTS: usize = 50;
    let counter = || async {
        let body = client
            .get(format!("{control}/_local/metrics"))
            .send()
            .await?
            .bytes()
            .await?;
        let metrics: Value = serde_json::from_slice(&body)?;
        Ok::<u64, BoxError>(metrics["sqs_calls"].as_u64().unwrap_or(0))
    };
    let mut report = serde_json::Map::new();
    for stream in [false, true] {
        let body = Arc::new(
            json!({"messages": [{"role": "user", "content": "count the queue calls for this prompt"}], "stream": stream})
                .to_string(),
        );
        let before = counter().await?;
        for _ in 0..REQUESTS {
            one(client, gateway, &body, stream).await?;
        }
        let calls = counter().await? - before;
        report.insert(
            if stream {
                "per_streamed_response"
            } else {
                "per_request"
            }
            .into(),
            json!(calls as f64 / REQUESTS as f64),
        );
    }
    Ok(Value::Object(report))
}

#[derive(Clone)]
struct Target {
    url: String,
    /// Where the key goes: the provider's own header to the mock, the SDK's choice to the gateway.
    header: http::HeaderName,
    key: String,
}

/// Rounds per comparison: the targets take turns, so drift on the machine (the other processes on
/// its two cores) falls on every target alike.
const ROUNDS: usize = 4;

/// Measures every target at one concurrency, interleaved round by round; reports each target's
/// latency and requests/s, and for each proxy its added latency over `direct` (the first target).
async fn compare(
    client: &reqwest::Client,
    targets: &[(&str, Target)],
    concurrency: usize,
    per_worker: usize,
    stream: bool,
) -> Result<Value, BoxError> {
    let body = Arc::new(
        json!({"messages": [{"role": "user", "content": "benchmark prompt with a few words"}], "stream": stream})
            .to_string(),
    );
    for (_, target) in targets {
        for _ in 0..20 {
            one(client, target, &body, stream).await?;
        }
    }
    let mut samples = vec![Vec::new(); targets.len()];
    let mut wall = vec![Duration::ZERO; targets.len()];
    for _ in 0..ROUNDS {
        for (index, (_, target)) in targets.iter().enumerate() {
            let started = Instant::now();
            let per_round = per_worker.div_ceil(ROUNDS);
            samples[index]
                .extend(measure(client, target, &body, concurrency, per_round, stream).await?);
            wall[index] += started.elapsed();
        }
    }
    let mut report = serde_json::Map::new();
    report.insert("concurrency".into(), concurrency.into());
    report.insert(
        "metric".into(),
        if stream {
            "stream_time_to_first_byte_ms"
        } else {
            "non_stream_latency_ms"
        }
        .into(),
    );
    let base = &samples[0];
    let mut added = std::collections::HashMap::new();
    let mut rps = std::collections::HashMap::new();
    for (index, (name, _)) in targets.iter().enumerate() {
        let mut entry = summary(&samples[index]);
        let per_second = samples[index].len() as f64 / wall[index].as_secs_f64().max(1e-9);
        entry["requests"] = samples[index].len().into();
        entry["requests_per_s"] = round(per_second).into();
        rps.insert(*name, per_second);
        if index > 0 {
            let p50 = percentile(&samples[index], 50.0) - percentile(base, 50.0);
            let p99 = percentile(&samples[index], 99.0) - percentile(base, 99.0);
            entry["added_p50_ms"] = round(p50).into();
            entry["added_p99_ms"] = round(p99).into();
            added.insert(*name, (p50, p99));
        }
        report.insert(name.to_string(), entry);
    }
    if let (Some(gateway), Some(litellm)) = (added.get("gateway"), added.get("litellm")) {
        // Ratios of added latency use at least 0.01 ms, so a gateway at the noise floor stays finite.
        report.insert(
            "ratios".into(),
            json!({
                "litellm_added_p50_over_gateway": round(litellm.0 / gateway.0.max(0.01)),
                "litellm_added_p99_over_gateway": round(litellm.1 / gateway.1.max(0.01)),
                "gateway_rps_over_litellm": round(rps["gateway"] / rps["litellm"].max(1e-9)),
            }),
        );
    }
    Ok(Value::Object(report))
}

/// Runs `concurrency` workers each sending `per_worker` requests; returns per-request milliseconds.
async fn measure(
    client: &reqwest::Client,
    target: &Target,
    body: &Arc<String>,
    concurrency: usize,
    per_worker: usize,
    stream: bool,
) -> Result<Vec<f64>, BoxError> {
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, target, body) = (client.clone(), target.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                samples.push(one(&client, &target, &body, stream).await?);
            }
            Ok::<_, BoxError>(samples)
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await??);
    }
    Ok(all)
}

/// One request: milliseconds to the last byte (non-stream) or to the first body chunk (stream).
async fn one(
    client: &reqwest::Client,
    target: &Target,
    body: &Arc<String>,
    stream: bool,
) -> Result<f64, BoxError> {
    let started = Instant::now();
    let response = client
        .post(&target.url)
        .header(&target.header, &target.key)
        .header("content-type", "application/json")
        .body(body.as_str().to_owned())
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!("{} answered {}", target.url, response.status()).into());
    }
    let mut chunks = response.bytes_stream();
    let mut first = None;
    while let Some(chunk) = chunks.next().await {
        chunk?;
        first.get_or_insert_with(|| started.elapsed());
    }
    let elapsed = if stream {
        first.unwrap_or_else(|| started.elapsed())
    } else {
        started.elapsed()
    };
    Ok(elapsed.as_secs_f64() * 1e3)
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn summary(samples: &[f64]) -> Value {
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    json!({
        "p50": round(percentile(samples, 50.0)),
        "p90": round(percentile(samples, 90.0)),
        "p99": round(percentile(samples, 99.0)),
        "mean": round(mean),
    })
}
