//! A small parser for `--name value` / `--name=value` options, shared by the subcommands.

use std::collections::BTreeMap;

/// The exit code of a command that could not run (usage, settings, AWS errors).
pub const EXIT_CANNOT_RUN: u8 = 2;
/// The exit code of a command that ran and found something wrong.
pub const EXIT_FINDINGS: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("unknown option {0:?}")]
    Unknown(String),
    #[error("option --{0} needs a value")]
    NoValue(String),
    #[error("option --{0} is given twice")]
    Twice(String),
    #[error("unexpected argument {0:?}")]
    Positional(String),
    #[error("missing required option --{0}")]
    Missing(&'static str),
    #[error("missing --{option} (or the setting {setting})")]
    MissingSetting {
        option: &'static str,
        setting: &'static str,
    },
    #[error("--{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Parsed options: each at most once, `--help` as a flag.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    values: BTreeMap<String, String>,
    pub help: bool,
}

impl Options {
    /// Parses `argv` against the option names the subcommand takes (without `--`).
    pub fn parse(argv: &[String], known: &[&str]) -> Result<Options, ArgError> {
        let mut options = Options::default();
        let mut items = argv.iter();
        while let Some(item) = items.next() {
            if item == "-h" || item == "--help" {
                options.help = true;
                continue;
            }
            let Some(option) = item.strip_prefix("--") else {
                return Err(ArgError::Positional(item.clone()));
            };
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => {
                    let value = items
                        .next()
                        .filter(|v| !v.starts_with("--"))
                        .ok_or_else(|| ArgError::NoValue(option.to_string()))?;
                    (option.to_string(), value.clone())
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(ArgError::Unknown(format!("--{name}")));
            }
            if options.values.insert(name.clone(), value).is_some() {
                return Err(ArgError::Twice(name));
            }
        }
        Ok(options)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_both_spellings_and_refuses_the_rest() {
        let options = Options::parse(
            &argv(&["--from", "2026-11-25T03", "--to=2026-11-25T04"]),
            &["from", "to"],
        )
        .unwrap();
        assert_eq!(options.get("from"), Some("2026-11-25T03"));
        assert_eq!(options.get("to"), Some("2026-11-25T04"));
        assert!(!options.help);
        assert!(Options::parse(&argv(&["--help"]), &[]).unwrap().help);
        assert_eq!(
            Options::parse(&argv(&["--bogus", "1"]), &["from"]),
            Err(ArgError::Unknown("--bogus".into()))
        );
        assert_eq!(
            Options::parse(&argv(&["--from"]), &["from"]),
            Err(ArgError::NoValue("from".into()))
        );
        assert_eq!(
            Options::parse(&argv(&["--from", "--to", "x"]), &["from", "to"]),
            Err(ArgError::NoValue("from".into()))
        );
        assert_eq!(
            Options::parse(&argv(&["--from=a", "--from=b"]), &["from"]),
            Err(ArgError::Twice("from".into()))
        );
        assert_eq!(
            Options::parse(&argv(&["stray"]), &["from"]),
            Err(ArgError::Positional("stray".into()))
        );
    }
}
