//! The /azure-openai route: a thin main over the shared route handler ([`gateway_shared::proxy`]).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    gateway_shared::proxy::run_from_env(gateway_shared::Provider::AzureOpenAi).await
}
