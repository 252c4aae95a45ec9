//! Invitations through SES. Cognito's own mail sends about 50 messages a day, too few for a bulk
//! provisioning run, so accounts are created without Cognito's message and the invitation (user name
//! and temporary password) goes out here, from the configured identity. The temporary password exists
//! only in this message and in Cognito: it is never logged, audited or returned.

use crate::secrets::Secret;

#[derive(Debug, thiserror::Error)]
#[error("the invitation to {user} could not be sent: {message}")]
pub struct MailError {
    pub user: String,
    pub message: String,
}

#[derive(Clone)]
pub struct Mailer {
    ses: aws_sdk_sesv2::Client,
    from: String,
    sign_in_url: Option<String>,
}

/// Who an invitation is for.
pub struct Invitee<'a> {
    pub username: &'a str,
    pub name: &'a str,
    pub email: &'a str,
}

impl Mailer {
    /// Invitations from `from` (an address of the SES identity), naming `sign_in_url` if given.
    pub fn new(sdk: &aws_config::SdkConfig, from: String, sign_in_url: Option<String>) -> Mailer {
        Mailer {
            ses: aws_sdk_sesv2::Client::new(sdk),
            from,
            sign_in_url,
        }
    }

    pub async fn invite(&self, to: &Invitee<'_>, password: &Secret) -> Result<(), MailError> {
        let (subject, body) = invitation(to, password, self.sign_in_url.as_deref());
        self.send(&[to.email], &subject, &body)
            .await
            .map_err(|message| MailError {
                user: to.username.to_string(),
                message,
            })
    }

    /// A plain-text message to `to` (one SES message; every address sees the others).
    pub async fn send(&self, to: &[&str], subject: &str, body: &str) -> Result<(), String> {
        let content = |text: &str| {
            aws_sdk_sesv2::types::Content::builder()
                .data(text)
                .charset("UTF-8")
                .build()
                .map_err(|e| e.to_string())
        };
        let message = aws_sdk_sesv2::types::Message::builder()
            .subject(content(subject)?)
            .body(
                aws_sdk_sesv2::types::Body::builder()
                    .text(content(body)?)
                    .build(),
            )
            .build();
        self.ses
            .send_email()
            .from_email_address(&self.from)
            .destination(
                aws_sdk_sesv2::types::Destination::builder()
                    .set_to_addresses(Some(to.iter().map(|a| a.to_string()).collect()))
                    .build(),
            )
            .content(
                aws_sdk_sesv2::types::EmailContent::builder()
                    .simple(message)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_sdk_sesv2::error::DisplayErrorContext(e).to_string())?;
        Ok(())
    }
}

/// Subject and text of an invitation, in Japanese and English.
fn invitation(to: &Invitee<'_>, password: &Secret, sign_in_url: Option<&str>) -> (String, String) {
    let sign_in_ja = sign_in_url
        .map(|url| format!("サインイン: {url}\n"))
        .unwrap_or_default();
    let sign_in_en = sign_in_url
        .map(|url| format!("Sign in: {url}\n"))
        .unwrap_or_default();
    let body = format!(
        "{name} 様\n\n\
         LLM Gateway のアカウントを用意しました。\n\
         ユーザー名: {username}\n\
         仮パスワード: {password}\n\
         初回のサインインで新しいパスワードを設定してください（仮パスワードは 3 日間有効です）。\n\
         {sign_in_ja}\n\
         ---\n\
         Your LLM Gateway account is ready.\n\
         User name: {username}\n\
         Temporary password: {password}\n\
         Set a new password at your first sign-in (the temporary password is valid for 3 days).\n\
         {sign_in_en}",
        name = to.name,
        username = to.username,
        password = password.expose(),
    );
    (
        "LLM Gateway アカウントのご案内 / Your LLM Gateway account".into(),
        body,
    )
}

/// A temporary password Cognito's policy accepts (length 8+, upper, lower, digit, symbol): 20
/// characters from a CSPRNG, one of each class guaranteed.
pub fn temporary_password() -> Result<Secret, aws_lc_rs::error::Unspecified> {
    const CLASSES: [&[u8]; 4] = [
        b"ABCDEFGHJKLMNPQRSTUVWXYZ",
        b"abcdefghijkmnopqrstuvwxyz",
        b"23456789",
        b"!#%*+-=?@^_",
    ];
    const LENGTH: usize = 20;
    let mut random = [0u8; LENGTH * 2];
    aws_lc_rs::rand::fill(&mut random)?;
    let all: Vec<u8> = CLASSES.concat();
    let mut chars: Vec<u8> = random[..LENGTH]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // The first four draw from one class each; the rest from all (the bias of `%` over a
            // 68-symbol alphabet is below what matters for a 3-day temporary password).
            let class = if i < CLASSES.len() { CLASSES[i] } else { &all };
            class[usize::from(*r) % class.len()]
        })
        .collect();
    // Shuffle so the guaranteed classes are not always in front.
    for i in (1..LENGTH).rev() {
        let j = usize::from(random[LENGTH + i]) % (i + 1);
        chars.swap(i, j);
    }
    Ok(Secret::new(String::from_utf8_lossy(&chars).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_passwords_meet_the_pool_policy_and_differ() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let password = temporary_password().unwrap();
            let text = password.expose();
            assert_eq!(text.chars().count(), 20);
            assert!(text.chars().any(|c| c.is_ascii_uppercase()));
            assert!(text.chars().any(|c| c.is_ascii_lowercase()));
            assert!(text.chars().any(|c| c.is_ascii_digit()));
            assert!(text.chars().any(|c| !c.is_ascii_alphanumeric()));
            assert!(seen.insert(text.to_string()));
        }
    }

    #[test]
    fn the_invitation_names_the_user_and_the_sign_in_page() {
        let password = Secret::new("Tmp-1234abcdEFGH!");
        let (subject, body) = invitation(
            &Invitee {
                username: "00123",
                name: "山田太郎",
                email: "t@example.com",
            },
            &password,
            Some("https://login.example.com"),
        );
        assert!(subject.contains("LLM Gateway"));
        assert!(body.contains("山田太郎 様"));
        assert!(body.contains("ユーザー名: 00123"));
        assert!(body.contains("Tmp-1234abcdEFGH!"));
        assert!(body.contains("Sign in: https://login.example.com"));
    }
}
