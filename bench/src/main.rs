//! Benchmarks against a running local stack (`bench/run.sh` starts one): prints one JSON document.
//!
//! - `authorizer`: the authorizer handler's time per call, in process, warm (JWKS cached), with a real
//!   Cognito (moto) access token.
//! - `gateway_overhead`: the same Azure OpenAI chat request sent to the mock provider directly and through
//!   the gateway (API Gateway emulation, authorizer, route, direct transport), at concurrency 1 and 32;
//!   non-stream latency to the last byte, stream time to first byte. Added latency = gateway - direct.
//! - `cold_start`: each function binary started against a stand-in Lambda runtime API on 127.0.0.1:
//!   time from process start to its first `invocation/next` poll (its init: config, clients, JWKS
//!   prefetch), plus binary size. Lambda's own sandbox start is not included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::types::AuthFlowType;
use futures_util::StreamExt;
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CHAT_PATH: &str = "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let state_path =
        std::env::var("GATEWAY_LOCAL_STATE").unwrap_or_else(|_| ".local/stack.json".into());
    let state: Value = serde_json::from_str(&std::fs::read_to_string(&state_path)?)?;
    let text = |key: &str| {
        state[key]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("{key} missing in {state_path}"))
    };

    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(text("region")?))
        .endpoint_url(text("aws_endpoint_url")?)
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let token = sign_in(&sdk, &state).await?;
    let upstream_key = aws_sdk_secretsmanager::Client::new(&sdk)
        .get_secret_value()
        .secret_id(
            state["secrets"]["azure_openai"]
                .as_str()
                .unwrap_or_default(),
        )
        .send()
        .await?
        .secret_string()
        .unwrap_or_default()
        .to_string();

    let authorizer = bench_authorizer(&state, &sdk, &token).await?;
    let cold_start = match std::env::var("GATEWAY_BENCH_BIN_DIR") {
        Ok(dir) => bench_cold_start(&state, &upstream_key_secret_ids(&state), &dir).await?,
        Err(_) => json!("skipped: GATEWAY_BENCH_BIN_DIR not set"),
    };

    let mock = state["mocks"]["azure_openai"]
        .as_str()
        .ok_or("the Azure OpenAI mock is not running")?;
    let direct = Target {
        url: format!("{mock}{CHAT_PATH}"),
        key: upstream_key,
    };
    let gateway = Target {
        url: format!("{}/azure-openai{CHAT_PATH}", text("base_url")?),
        key: token,
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()?;
    let mut overhead = Vec::new();
    for (concurrency, per_worker) in [(1usize, 400usize), (32, 60)] {
        for stream in [false, true] {
            let direct_ms = measure(&client, &direct, concurrency, per_worker, stream).await?;
            let gateway_ms = measure(&client, &gateway, concurrency, per_worker, stream).await?;
            overhead.push(json!({
                "concurrency": concurrency,
                "requests": concurrency * per_worker,
                "metric": if stream { "stream_time_to_first_byte_ms" } else { "non_stream_latency_ms" },
                "direct": summary(&direct_ms),
                "gateway": summary(&gateway_ms),
                "added_p50_ms": round(percentile(&gateway_ms, 50.0) - percentile(&direct_ms, 50.0)),
                "added_p99_ms": round(percentile(&gateway_ms, 99.0) - percentile(&direct_ms, 99.0)),
            }));
        }
    }
    let sqs_calls = bench_sqs_calls(&client, &gateway, &text("control_url")?).await?;
    let transport = state["queues"]["requests"]["azure_openai"]["transport"].clone();
    let report = json!({
        "note": "release build of the local stack; mock upstream on 127.0.0.1; 2 cores shared by client, gateway, moto and mocks",
        "transport": transport,
        "sqs_calls": sqs_calls,
        "authorizer": authorizer,
        "cold_start": cold_start,
        "gateway_overhead": overhead,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn sign_in(sdk: &aws_config::SdkConfig, state: &Value) -> Result<String, BoxError> {
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(sdk);
    let out = cognito
        .admin_initiate_auth()
        .user_pool_id(state["user_pool_id"].as_str().unwrap_or_default())
        .client_id(state["app_client_id"].as_str().unwrap_or_default())
        .auth_flow(AuthFlowType::AdminUserPasswordAuth)
        .auth_parameters(
            "USERNAME",
            state["demo_user"]["username"].as_str().unwrap_or_default(),
        )
        .auth_parameters(
            "PASSWORD",
            state["demo_user"]["password"].as_str().unwrap_or_default(),
        )
        .send()
        .await?;
    Ok(out
        .authentication_result()
        .and_then(|r| r.access_token())
        .ok_or("no access token")?
        .to_string())
}

async fn bench_authorizer(
    state: &Value,
    sdk: &aws_config::SdkConfig,
    token: &str,
) -> Result<Value, BoxError> {
    let mut settings = std::collections::HashMap::new();
    settings.insert(
        "AWS_REGION".to_string(),
        state["region"].as_str().unwrap_or_default().to_string(),
    );
    settings.insert(
        "COGNITO_USER_POOL_ID".into(),
        state["user_pool_id"].as_str().unwrap_or_default().into(),
    );
    settings.insert(
        "COGNITO_APP_CLIENT_IDS".into(),
        state["app_client_id"].as_str().unwrap_or_default().into(),
    );
    settings.insert(
        "COGNITO_JWKS_URL".into(),
        state["jwks_url"].as_str().unwrap_or_default().into(),
    );
    let config = authorizer::AuthorizerConfig::from_settings(&settings)?;
    // Audit events of refusals go to the log here; the benchmark only sends allowed requests.
    let audit = std::sync::Arc::new(gateway_shared::audit::LogAuditSink);
    let authorizer_state = authorizer::State::from_config(config, sdk, audit).await?;
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../events/authorizer.json"
    ))?
    .replace("REPLACE_WITH_GATEWAY_TOKEN", token);
    let event: authorizer::Request = serde_json::from_str(&template)?;

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
            return Err("benchmark token was denied".into());
        }
    }
    Ok(json!({"calls": calls, "unit": "microseconds", "per_call": summary(&samples)}))
}

fn upstream_key_secret_ids(state: &Value) -> (String, String) {
    let id = |k: &str| state["secrets"][k].as_str().unwrap_or_default().to_string();
    (id("azure_openai"), id("gemini"))
}

/// Starts each function binary `STARTS` times; returns median init time and binary size per function.
async fn bench_cold_start(
    state: &Value,
    secrets: &(String, String),
    dir: &str,
) -> Result<Value, BoxError> {
    const STARTS: usize = 7;
    let text = |k: &str| state[k].as_str().unwrap_or_default().to_string();
    let common = [
        ("AWS_REGION", text("region")),
        ("AWS_ENDPOINT_URL", text("aws_endpoint_url")),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", "bench".to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ];
    let functions: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "authorizer",
            vec![
                ("COGNITO_USER_POOL_ID", text("user_pool_id")),
                ("COGNITO_APP_CLIENT_IDS", text("app_client_id")),
                ("COGNITO_JWKS_URL", text("jwks_url")),
            ],
        ),
        (
            "azure-openai",
            vec![
                route_transport(state, "azure_openai", "GATEWAY_TRANSPORT"),
                route_transport(state, "azure_openai", "GATEWAY_REQUEST_QUEUE_URL"),
                (
                    "GATEWAY_AZURE_OPENAI_ENDPOINT",
                    state["upstreams"]["azure_openai"]
                        .as_str()
                        .unwrap_or_default()
                        .into(),
                ),
                ("GATEWAY_AZURE_OPENAI_KEY_SECRET_ID", secrets.0.clone()),
            ],
        ),
        (
            "bedrock-claude",
            vec![
                (
                    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
                    state["upstreams"]["bedrock"]
                        .as_str()
                        .unwrap_or_default()
                        .into(),
                ),
                route_transport(state, "bedrock", "GATEWAY_TRANSPORT"),
                route_transport(state, "bedrock", "GATEWAY_REQUEST_QUEUE_URL"),
            ],
        ),
        (
            "gemini",
            vec![
                route_transport(state, "gemini", "GATEWAY_TRANSPORT"),
                route_transport(state, "gemini", "GATEWAY_REQUEST_QUEUE_URL"),
                (
                    "GATEWAY_GEMINI_ENDPOINT",
                    state["upstreams"]["gemini"]
                        .as_str()
                        .unwrap_or_default()
                        .into(),
                ),
                ("GATEWAY_GEMINI_KEY_SECRET_ID", secrets.1.clone()),
            ],
        ),
    ];
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

/// The route's transport setting as the running stack has it (so init includes the reply queue).
fn route_transport(state: &Value, route: &str, name: &'static str) -> (&'static str, String) {
    let queue = &state["queues"]["requests"][route];
    let value = match name {
        "GATEWAY_TRANSPORT" => queue["transport"].as_str(),
        _ => queue["url"].as_str(),
    };
    (name, value.unwrap_or_default().to_string())
}

/// Process start to the first `GET /2018-06-01/runtime/invocation/next` on a stand-in runtime API.
async fn init_time_ms<'a>(
    binary: &str,
    env: impl Iterator<Item = &'a (&'a str, String)>,
) -> Result<f64, BoxError> {
    use tokio::io::AsyncReadExt;
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
    let wait = async {
        loop {
            let (mut stream, _) = listener.accept().await?;
            let mut buf = vec![0u8; 2048];
            let n = stream.read(&mut buf).await?;
            if String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next") {
                return Ok::<_, BoxError>(started.elapsed());
            }
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

struct Target {
    url: String,
    key: String,
}

/// Runs `concurrency` workers each sending `per_worker` requests; returns per-request milliseconds.
async fn measure(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    per_worker: usize,
    stream: bool,
) -> Result<Vec<f64>, BoxError> {
    let body = Arc::new(
        json!({"messages": [{"role": "user", "content": "benchmark prompt with a few words"}], "stream": stream})
            .to_string(),
    );
    for _ in 0..20 {
        one(client, target, &body, stream).await?;
    }
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, key, body) = (
            client.clone(),
            target.url.clone(),
            target.key.clone(),
            body.clone(),
        );
        workers.push(tokio::spawn(async move {
            let target = Target { url, key };
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
        .header("api-key", &target.key)
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
