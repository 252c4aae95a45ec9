//! `gateway-audit`: the auditor's command over the gateway's audit trail. Each subcommand is a module
//! taking the arguments after its name; this file only dispatches.
//!
//! Settings come from the environment as the functions read them (`GATEWAY_AUDIT_BUCKET`, ...) and the
//! standard AWS ones (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials, profiles). Exit codes:
//! - `verify`: 0 the range is intact, 1 findings, 2 the command could not run;
//! - `bodies`: 0 done, 1 failed, 2 usage, 3 refused for want of a permission, 4 authentication failed
//!   (tampering).

mod args;
mod bodies;
mod verify;

use std::process::ExitCode;

const USAGE: &str = "usage: gateway-audit <subcommand> [options]

subcommands:
  verify    walk the audit digest chain over a range of hours and report every tampering found
  bodies    fetch and decrypt one request's request and response bodies (needs s3:GetObject and
            s3:ListBucket on the audit bucket's bodies/ prefix, and kms:Decrypt on the bodies key)

run `gateway-audit <subcommand> --help` for its options";

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let subcommand = argv.next();
    let rest: Vec<String> = argv.collect();
    match subcommand.as_deref() {
        Some("verify") => verify::run(rest).await,
        Some("bodies") => ExitCode::from(bodies::main(rest).await),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("gateway-audit: unknown subcommand {other:?}\n\n{USAGE}");
            ExitCode::from(args::EXIT_CANNOT_RUN)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(args::EXIT_CANNOT_RUN)
        }
    }
}
