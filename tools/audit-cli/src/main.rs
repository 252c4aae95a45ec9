//! `gateway-audit`: the auditor's command line. Each subcommand is a module with a `run` taking the
//! arguments after its name; this file only dispatches.
//!
//! Settings come from the environment as the functions read them (`GATEWAY_AUDIT_BUCKET`, ...) and
//! the standard AWS ones (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials, profiles).
//! Exit codes: 0 success (an intact range), 1 findings, 2 the command could not run (usage,
//! settings, AWS unreachable or refusing).

mod args;
mod verify;

use std::process::ExitCode;

const USAGE: &str = "usage: gateway-audit <subcommand> [options]

subcommands:
  verify    walk the audit digest chain over a range of hours and report every tampering found

run `gateway-audit <subcommand> --help` for its options";

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let subcommand = argv.next();
    let rest: Vec<String> = argv.collect();
    match subcommand.as_deref() {
        Some("verify") => verify::run(rest).await,
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
