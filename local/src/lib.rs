//! The local stack's contracts: the deployment configuration it reads, and the state file it writes. The stack itself is the
//! `gateway-local` binary (`src/main.rs`).

pub mod deployment;
pub mod state;
