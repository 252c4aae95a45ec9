//! `gateway-audit`: the auditor's command over the gateway's audit trail, one module per subcommand.
//! AWS access comes from the standard environment (profile, region, `AWS_ENDPOINT_URL`); exit codes:
//! 0 done, 1 failed, 2 usage, 3 refused for want of a permission, 4 authentication failed (tampering).

use std::process::ExitCode;

mod bodies;

const USAGE: &str = "usage: gateway-audit <command> [options]

commands:
  bodies   fetch and decrypt one request's request and response bodies (needs s3:GetObject and
           s3:ListBucket on the audit bucket's bodies/ prefix, and kms:Decrypt on the bodies key)

`gateway-audit <command> --help` describes a command.";

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let code = match args.next().as_deref() {
        Some("bodies") => bodies::main(args.collect()).await,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            0
        }
        Some(other) => {
            eprintln!("gateway-audit: unknown command {other:?}\n\n{USAGE}");
            2
        }
        None => {
            eprintln!("{USAGE}");
            2
        }
    };
    ExitCode::from(code)
}
