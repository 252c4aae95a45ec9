//! Library code shared by the gateway's Lambda functions.
//!
//! Each module owns one concern of the data plane:
//! - [`auth`]: where stock SDKs put their key, and verifying gateway tokens (JWT/JWKS).
//! - [`scopes`]: the scope policy (hierarchy, group grants, route operations, model allow-lists) as data.
//! - [`providers`]: what differs between Azure OpenAI, Bedrock and Gemini: each one's relayed API as a
//!   grammar (method, path shape -> operation), error shapes, usage shapes.
//! - [`paths`]: the path invariant: what leaves for a provider is the path that was classified.
//! - [`request_event`]: the API Gateway proxy event, read without panics.
//! - [`transport`]: how a request reaches the provider (`direct` now; `queue` slots in behind the same trait).
//! - [`proxy`]: the route handler every provider Lambda runs: authorize again, rewrite, relay, render errors.
//! - [`secrets`], [`upstream_auth`]: upstream credentials, cached per execution environment, never logged.
//! - `revocation`, `apikeys` (features): the tables the authorizer checks on every request, read
//!   through an in-memory `mirror` so no request waits on DynamoDB.
//! - [`audit`]: one audit event per request (decision, principal, usage, sizes, latency), to SQS.
//! - [`config`], [`telemetry`], [`error`]: typed configuration, JSON tracing, the gateway's own errors.

#[cfg(feature = "apikeys")]
pub mod apikeys;
pub mod audit;
pub mod auth;
#[cfg(feature = "budgets")]
pub mod budgets;
pub mod config;
#[cfg(feature = "identity")]
pub mod directory;
pub mod error;
pub mod eventstream;
pub mod headers;
#[cfg(feature = "identity")]
pub mod mail;
#[cfg(any(feature = "revocation", feature = "apikeys", feature = "budgets"))]
pub mod mirror;
pub mod paths;
pub mod pricing;
pub mod providers;
pub mod provisioning;
pub mod proxy;
pub mod request_event;
#[cfg(feature = "revocation")]
pub mod revocation;
pub mod rollup;
pub mod scopes;
pub mod secrets;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod transport;
pub mod upstream_auth;
#[cfg(feature = "usage-plans")]
pub mod usage_plans;

pub use error::{ErrorKind, GatewayError};
pub use providers::Provider;
