//! `gateway-audit verify`: walks the digest chain over a range of hours and reports each finding with
//! the key it concerns (the checks: `gateway_shared::audit::digest::verify_range`).

use std::process::ExitCode;

use gateway_shared::audit::clock::Hour;
use gateway_shared::audit::digest::{self, KmsDigestKey, Layout, S3AuditStore};
use gateway_shared::config::{ConfigError, Env, Settings};

use crate::args::{ArgError, Options, EXIT_CANNOT_RUN, EXIT_FINDINGS};

pub const USAGE: &str = "usage: gateway-audit verify --from YYYY-MM-DDTHH --to YYYY-MM-DDTHH [--bucket NAME] [--key-id KEY]

Walks the audit digest chain over the hours --from through --to (UTC, both included) and prints one
line per finding, `<kind>TAB<key>TAB<detail>`, kinds:
  missing-digest    an hour of the range has no digest
  bad-signature     a digest's signature is absent or not the key's over its bytes
  malformed-digest  a digest that is not a canonical digest document, or lists another hour's objects
  misplaced-digest  a digest stored under another hour's key (swapped, copied)
  broken-chain      a link to the previous digest that does not match it (replaced, reordered, restarted)
  missing-object    listed in a digest, gone (a delete marker hides it)
  altered-object    listed in a digest, now with other bytes (a new version at the same key)
  moved-object      has the bytes of an object a digest lists under another key (another hour)
  unlisted-object   present in an hour of the range, listed in no valid digest
then one summary line, `intact: ...` or `NOT INTACT: <n> findings; ...`.
Exit code: 0 when the range is intact, 1 on findings, 2 when it could not be verified.

options (or settings in the environment):
  --bucket NAME   the audit bucket                                  GATEWAY_AUDIT_BUCKET
  --key-id KEY    the digest signing key; give its ARN: the key     GATEWAY_AUDIT_DIGEST_KEY_ID
                  named here is trusted, never one a digest names
prefixes: GATEWAY_AUDIT_PREFIX (audit/), GATEWAY_AUDIT_DIGEST_PREFIX (digests/); AWS: the standard
settings (AWS_REGION, AWS_ENDPOINT_URL, credentials). Needs s3:GetObject and s3:ListBucketVersions
on the bucket and kms:Verify on the key: signatures are checked by KMS Verify.";

const OPTIONS: &[&str] = &["from", "to", "bucket", "key-id"];

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Args(#[from] ArgError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

#[derive(Debug, PartialEq, Eq)]
pub struct VerifyArgs {
    pub from: Hour,
    pub to: Hour,
    pub bucket: String,
    pub key_id: String,
    pub layout: Layout,
}

fn hour(options: &Options, name: &'static str) -> Result<Hour, ArgError> {
    let text = options.get(name).ok_or(ArgError::Missing(name))?;
    Hour::parse(text).ok_or_else(|| ArgError::Invalid {
        name,
        reason: format!("{text:?} is not an hour, YYYY-MM-DDTHH (UTC)"),
    })
}

fn option_or_setting(
    options: &Options,
    settings: &dyn Settings,
    option: &'static str,
    setting: &'static str,
) -> Result<String, ArgError> {
    options
        .get(option)
        .map(str::to_string)
        .or_else(|| settings.get(setting))
        .ok_or(ArgError::MissingSetting { option, setting })
}

impl VerifyArgs {
    pub fn read(options: &Options, settings: &dyn Settings) -> Result<VerifyArgs, SetupError> {
        let (from, to) = (hour(options, "from")?, hour(options, "to")?);
        if to < from {
            return Err(ArgError::Invalid {
                name: "to",
                reason: format!("{to} is before --from {from}"),
            }
            .into());
        }
        Ok(VerifyArgs {
            from,
            to,
            bucket: option_or_setting(options, settings, "bucket", "GATEWAY_AUDIT_BUCKET")?,
            key_id: option_or_setting(options, settings, "key-id", "GATEWAY_AUDIT_DIGEST_KEY_ID")?,
            layout: Layout::from_settings(settings)?,
        })
    }
}

pub async fn run(argv: Vec<String>) -> ExitCode {
    let options = match Options::parse(&argv, OPTIONS) {
        Ok(options) if options.help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(options) => options,
        Err(error) => return usage_error(&error),
    };
    let args = match VerifyArgs::read(&options, &Env) {
        Ok(args) => args,
        Err(error) => return usage_error(&error),
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = S3AuditStore::new(aws_sdk_s3::Client::new(&sdk), args.bucket.clone());
    let key = KmsDigestKey::new(aws_sdk_kms::Client::new(&sdk), args.key_id.clone());
    match digest::verify_range(&store, &key, &args.layout, args.from, args.to).await {
        Ok(report) => {
            println!("{report}");
            if report.intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FINDINGS)
            }
        }
        Err(error) => {
            eprintln!(
                "gateway-audit verify: could not verify bucket {}: {error}",
                args.bucket
            );
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}

fn usage_error(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("gateway-audit verify: {error}\n\n{USAGE}");
    ExitCode::from(EXIT_CANNOT_RUN)
}

#[cfg(test)]
mod tests {

    use super::*;

    fn options(items: &[&str]) -> Options {
        let argv: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        Options::parse(&argv, OPTIONS).unwrap()
    }

    use gateway_shared::testing::settings;

    #[test]
    fn options_win_over_settings_and_settings_fill_in() {
        let env = settings(&[
            ("GATEWAY_AUDIT_BUCKET", "from-env"),
            ("GATEWAY_AUDIT_DIGEST_KEY_ID", "arn:key"),
        ]);
        let args = VerifyArgs::read(
            &options(&[
                "--from",
                "2026-11-25T03",
                "--to",
                "2026-11-25T05",
                "--bucket",
                "given",
            ]),
            &env,
        )
        .unwrap();
        assert_eq!(args.bucket, "given");
        assert_eq!(args.key_id, "arn:key");
        assert_eq!(args.to.to_string(), "2026-11-25T05");
        assert_eq!(args.layout, Layout::default());
    }

    #[test]
    fn bad_ranges_and_missing_settings_are_named() {
        let env = settings(&[("GATEWAY_AUDIT_BUCKET", "b")]);
        let error = |items: &[&str]| {
            VerifyArgs::read(&options(items), &env)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error(&["--from", "2026-11-25T03", "--to", "2026-11-25T05"]),
            "missing --key-id (or the setting GATEWAY_AUDIT_DIGEST_KEY_ID)"
        );
        assert_eq!(
            error(&["--to", "2026-11-25T05"]),
            "missing required option --from"
        );
        assert!(error(&["--from", "2026-11-25", "--to", "2026-11-25T05"]).contains("not an hour"));
        assert!(error(&[
            "--from",
            "2026-11-25T05",
            "--to",
            "2026-11-25T03",
            "--key-id",
            "k"
        ])
        .contains("before --from"));
    }
}
