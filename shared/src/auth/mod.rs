//! Authentication: finding the gateway token where each stock SDK puts its key, and verifying it.
//! Tokens are never logged or echoed; errors name the failed check only for the logs.

pub mod context;
pub mod credential;
pub mod jwt;

pub use context::AuthContext;
pub use credential::{
    extract_credential, ClientToken, Credential, CredentialError, CredentialSource,
};
pub use jwt::{IssuerConfig, TokenError, VerifiedToken, Verifier};
