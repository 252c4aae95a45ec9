//! The local stack's contract with its readers: the state file. The stack itself is the
//! `gateway-local` binary (`src/main.rs`).

pub mod state;
