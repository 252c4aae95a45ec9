//! The directory (the Cognito user pool) as the gateway manages it: the provisioner, the scheduler's
//! date job and the admin API read users and change them only through here, so every disable also
//! revokes the user's tokens for the authorizer ([`crate::revocation`]), and every new account gets
//! its invitation the same way ([`crate::mail`]). Usernames are the employee user_ids.

use std::collections::BTreeMap;

use aws_sdk_cognitoidentityprovider::primitives::DateTimeFormat;
use aws_sdk_cognitoidentityprovider::types::{AttributeType, MessageActionType, UserType};
use aws_sdk_cognitoidentityprovider::Client;

use crate::config::{self, ConfigError, Settings};
use crate::mail::{temporary_password, Invitee, Mailer};
use crate::provisioning::plan::{self, Attributes, Change, DirectoryUser, PlannedRow};
use crate::revocation::{Revocation, Revocations};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{action}: {message}")]
    Cognito {
        action: &'static str,
        message: String,
    },
    #[error("user {0} does not exist")]
    NoSuchUser(String),
    #[error("user {0} exists already")]
    Exists(String),
    #[error(transparent)]
    Revocation(#[from] crate::revocation::RevocationError),
    #[error(transparent)]
    Mail(#[from] crate::mail::MailError),
    #[error("no temporary password could be generated")]
    Random,
}

fn failed<E>(
    action: &'static str,
) -> impl FnOnce(aws_sdk_cognitoidentityprovider::error::SdkError<E>) -> DirectoryError
where
    E: std::error::Error + aws_sdk_cognitoidentityprovider::error::ProvideErrorMetadata + 'static,
{
    move |e| {
        let code = e.as_service_error().and_then(|s| s.code()).unwrap_or("");
        match code {
            "UserNotFoundException" => DirectoryError::NoSuchUser(String::new()),
            "UsernameExistsException" => DirectoryError::Exists(String::new()),
            _ => DirectoryError::Cognito {
                action,
                message: aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(e).to_string(),
            },
        }
    }
}

/// Names the user in the errors that lacked one.
fn about(username: &str) -> impl FnOnce(DirectoryError) -> DirectoryError + '_ {
    move |error| match error {
        DirectoryError::NoSuchUser(_) => DirectoryError::NoSuchUser(username.to_string()),
        DirectoryError::Exists(_) => DirectoryError::Exists(username.to_string()),
        other => other,
    }
}

/// A user as the directory holds them: every attribute, the Cognito status, the department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub username: String,
    pub sub: Option<String>,
    pub attributes: BTreeMap<String, String>,
    pub department: Option<String>,
    pub enabled: bool,
    /// Cognito's status (`CONFIRMED`, `FORCE_CHANGE_PASSWORD`, `RESET_REQUIRED`, ...).
    pub cognito_status: String,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl UserView {
    /// The status as seed 002 names it: Cognito's, except that a confirmed account whose e-mail
    /// changed and is not yet verified reads `EMAIL_VERIFY_REQUIRED`.
    pub fn status(&self) -> &str {
        if self.cognito_status == "CONFIRMED"
            && self.attributes.get("email_verified").map(String::as_str) == Some("false")
        {
            "EMAIL_VERIFY_REQUIRED"
        } else {
            &self.cognito_status
        }
    }

    /// The planning view (the attributes provisioning owns).
    pub fn planning(&self) -> DirectoryUser {
        DirectoryUser {
            username: self.username.clone(),
            attributes: self
                .attributes
                .iter()
                .filter(|(name, _)| plan::is_owned(name))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect(),
            department: self.department.clone(),
            enabled: self.enabled,
        }
    }

    /// The `sub` tokens carry, which revocations are keyed by.
    pub fn subject(&self) -> Result<&str, DirectoryError> {
        self.sub
            .as_deref()
            .filter(|sub| !sub.is_empty())
            .ok_or_else(|| DirectoryError::Cognito {
                action: "read the user's sub",
                message: format!("user {} has no sub attribute", self.username),
            })
    }

    fn invitee(&self) -> Invitee<'_> {
        Invitee {
            username: &self.username,
            name: self
                .attributes
                .get("name")
                .map(String::as_str)
                .unwrap_or(&self.username),
            email: self
                .attributes
                .get("email")
                .map(String::as_str)
                .unwrap_or_default(),
        }
    }
}

pub struct Directory {
    cognito: Client,
    user_pool_id: String,
    group_prefix: String,
    revocations: Revocations,
    mailer: Option<Mailer>,
}

impl Directory {
    pub fn new(
        cognito: Client,
        user_pool_id: String,
        group_prefix: String,
        revocations: Revocations,
        mailer: Option<Mailer>,
    ) -> Self {
        Directory {
            cognito,
            user_pool_id,
            group_prefix,
            revocations,
            mailer,
        }
    }

    /// A Cognito client whose admin calls retry adaptively: Cognito rate-limits admin calls per
    /// account (tens per second), and a big file or a busy day meets throttling, which this slows
    /// down for instead of failing rows.
    pub fn client(sdk: &aws_config::SdkConfig) -> Client {
        let config = aws_sdk_cognitoidentityprovider::config::Builder::from(sdk)
            .retry_config(
                aws_config::retry::RetryConfig::adaptive()
                    .with_max_attempts(8)
                    .with_initial_backoff(std::time::Duration::from_millis(200)),
            )
            .build();
        Client::from_conf(config)
    }

    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    fn group(&self, department: &str) -> String {
        format!("{}{department}", self.group_prefix)
    }

    /// Every user, with their department (from the department groups in `departments`), by username.
    pub async fn users<'a>(
        &self,
        departments: impl Iterator<Item = &'a str>,
    ) -> Result<BTreeMap<String, UserView>, DirectoryError> {
        let mut users = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .cognito
                .list_users()
                .user_pool_id(&self.user_pool_id)
                .set_pagination_token(token.take())
                .send()
                .await
                .map_err(failed("list users"))?;
            for user in page.users() {
                if let Some(found) = user_view(user) {
                    users.insert(found.username.clone(), found);
                }
            }
            token = page.pagination_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        for department in departments {
            let mut token = None;
            loop {
                let page = self
                    .cognito
                    .list_users_in_group()
                    .user_pool_id(&self.user_pool_id)
                    .group_name(self.group(department))
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(failed("list users in group"))?;
                for user in page.users() {
                    if let Some(found) = user.username().and_then(|u| users.get_mut(u)) {
                        found.department = Some(department.to_string());
                    }
                }
                token = page.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(users)
    }

    /// One user, with their department group.
    pub async fn user(&self, username: &str) -> Result<UserView, DirectoryError> {
        let found = self
            .cognito
            .admin_get_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await
            .map_err(failed("get user"))
            .map_err(about(username))?;
        let attributes: BTreeMap<String, String> = found
            .user_attributes()
            .iter()
            .map(|a| {
                (
                    a.name().to_string(),
                    a.value().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let groups = self
            .cognito
            .admin_list_groups_for_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .limit(60)
            .send()
            .await
            .map_err(failed("list the user's groups"))
            .map_err(about(username))?;
        let department = groups
            .groups()
            .iter()
            .filter_map(|g| g.group_name())
            .find_map(|g| g.strip_prefix(&self.group_prefix))
            .map(str::to_string);
        Ok(UserView {
            username: found.username().to_string(),
            sub: attributes.get("sub").cloned(),
            attributes,
            department,
            enabled: found.enabled(),
            cognito_status: found
                .user_status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "UNKNOWN".into()),
            created_at: found.user_create_date().and_then(rfc3339),
            updated_at: found.user_last_modified_date().and_then(rfc3339),
        })
    }

    /// Applies one planned row. Each step is idempotent, so a run cut off halfway is finished by the
    /// next run of the same file (which plans from what the cut-off run left).
    pub async fn apply(&self, row: &PlannedRow, now_secs: u64) -> Result<(), DirectoryError> {
        match &row.change {
            Change::Unchanged => Ok(()),
            Change::Create {
                attributes,
                department,
                enabled,
            } => {
                self.create(&row.user_id, attributes, department, *enabled, now_secs)
                    .await
            }
            Change::Update {
                attributes,
                move_department,
                set_enabled,
            } => {
                self.update_attributes(&row.user_id, attributes).await?;
                if let Some((from, to)) = move_department {
                    self.move_department(&row.user_id, from.as_deref(), to)
                        .await?;
                }
                if let Some(enabled) = set_enabled {
                    self.set_enabled(&row.user_id, *enabled, now_secs).await?;
                }
                Ok(())
            }
        }
    }

    /// Creates an account in `department`. Enabled now: invited at once (through SES when a mailer
    /// is configured, else by Cognito). Not enabled (a future starter): created disabled and not
    /// invited, since the temporary password would expire before the start date; the invitation goes
    /// out when it is enabled.
    pub async fn create(
        &self,
        username: &str,
        attributes: &Attributes,
        department: &str,
        enabled: bool,
        now_secs: u64,
    ) -> Result<(), DirectoryError> {
        let mut create = self
            .cognito
            .admin_create_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .set_user_attributes(Some(attribute_list(attributes)));
        let password = match (&self.mailer, enabled) {
            (_, false) => {
                create = create.message_action(MessageActionType::Suppress);
                None
            }
            (Some(_), true) => {
                let password = temporary_password().map_err(|_| DirectoryError::Random)?;
                create = create
                    .message_action(MessageActionType::Suppress)
                    .temporary_password(password.expose());
                Some(password)
            }
            (None, true) => None,
        };
        create
            .send()
            .await
            .map_err(failed("create user"))
            .map_err(about(username))?;
        self.add_to_group(username, department).await?;
        if !enabled {
            self.set_enabled(username, false, now_secs).await?;
        }
        if let (Some(mailer), Some(password)) = (&self.mailer, password) {
            let invitee = Invitee {
                username,
                name: attributes
                    .get("name")
                    .map(String::as_str)
                    .unwrap_or(username),
                email: attributes
                    .get("email")
                    .map(String::as_str)
                    .unwrap_or_default(),
            };
            mailer.invite(&invitee, &password).await?;
        }
        Ok(())
    }

    /// Writes the non-empty attributes and removes the emptied ones (Cognito keeps no empty values).
    pub async fn update_attributes(
        &self,
        username: &str,
        attributes: &Attributes,
    ) -> Result<(), DirectoryError> {
        let set = attribute_list(attributes);
        if !set.is_empty() {
            self.cognito
                .admin_update_user_attributes()
                .user_pool_id(&self.user_pool_id)
                .username(username)
                .set_user_attributes(Some(set))
                .send()
                .await
                .map_err(failed("update user attributes"))
                .map_err(about(username))?;
        }
        let cleared: Vec<String> = attributes
            .iter()
            .filter(|(_, value)| value.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        if !cleared.is_empty() {
            self.cognito
                .admin_delete_user_attributes()
                .user_pool_id(&self.user_pool_id)
                .username(username)
                .set_user_attribute_names(Some(cleared))
                .send()
                .await
                .map_err(failed("delete user attributes"))
                .map_err(about(username))?;
        }
        Ok(())
    }

    pub async fn move_department(
        &self,
        username: &str,
        from: Option<&str>,
        to: &str,
    ) -> Result<(), DirectoryError> {
        self.add_to_group(username, to).await?;
        if let Some(from) = from.filter(|from| *from != to) {
            self.cognito
                .admin_remove_user_from_group()
                .user_pool_id(&self.user_pool_id)
                .username(username)
                .group_name(self.group(from))
                .send()
                .await
                .map_err(failed("remove user from group"))
                .map_err(about(username))?;
        }
        Ok(())
    }

    async fn add_to_group(&self, username: &str, department: &str) -> Result<(), DirectoryError> {
        self.cognito
            .admin_add_user_to_group()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .group_name(self.group(department))
            .send()
            .await
            .map_err(failed("add user to group"))
            .map_err(about(username))?;
        Ok(())
    }

    /// Enables or disables an account. A disable signs the user out everywhere and records the
    /// revocation, so their unexpired access tokens stop working too. An enable of an account that
    /// never received its invitation (a future starter whose day came) sends it, with a new
    /// temporary password.
    pub async fn set_enabled(
        &self,
        username: &str,
        enabled: bool,
        now_secs: u64,
    ) -> Result<(), DirectoryError> {
        let user = self.user(username).await?;
        let sub = user.subject()?.to_string();
        if enabled {
            self.cognito
                .admin_enable_user()
                .user_pool_id(&self.user_pool_id)
                .username(username)
                .send()
                .await
                .map_err(failed("enable user"))
                .map_err(about(username))?;
            self.revocations
                .record(&sub, username, Revocation::Enable, now_secs)
                .await?;
            if user.cognito_status == "FORCE_CHANGE_PASSWORD" {
                self.reinvite(&user).await?;
            }
        } else {
            // Revoked first: should a later step fail, the tokens are refused already.
            self.revocations
                .record(&sub, username, Revocation::Disable, now_secs)
                .await?;
            self.cognito
                .admin_disable_user()
                .user_pool_id(&self.user_pool_id)
                .username(username)
                .send()
                .await
                .map_err(failed("disable user"))
                .map_err(about(username))?;
            self.global_sign_out(username).await?;
        }
        Ok(())
    }

    /// A new temporary password and the invitation with it (SES configured; else Cognito resends).
    async fn reinvite(&self, user: &UserView) -> Result<(), DirectoryError> {
        match &self.mailer {
            Some(mailer) => {
                let password = temporary_password().map_err(|_| DirectoryError::Random)?;
                self.cognito
                    .admin_set_user_password()
                    .user_pool_id(&self.user_pool_id)
                    .username(&user.username)
                    .password(password.expose())
                    .permanent(false)
                    .send()
                    .await
                    .map_err(failed("set a temporary password"))
                    .map_err(about(&user.username))?;
                mailer.invite(&user.invitee(), &password).await?;
            }
            None => {
                self.cognito
                    .admin_create_user()
                    .user_pool_id(&self.user_pool_id)
                    .username(&user.username)
                    .message_action(MessageActionType::Resend)
                    .send()
                    .await
                    .map_err(failed("resend the invitation"))
                    .map_err(about(&user.username))?;
            }
        }
        Ok(())
    }

    async fn global_sign_out(&self, username: &str) -> Result<(), DirectoryError> {
        // Refresh tokens stop minting new access tokens; the revocation record stops the current ones.
        self.cognito
            .admin_user_global_sign_out()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await
            .map_err(failed("sign user out"))
            .map_err(about(username))?;
        Ok(())
    }

    /// Signs the user out everywhere; answers the time (epoch seconds) before which their tokens are
    /// now refused.
    pub async fn sign_out(&self, username: &str, now_secs: u64) -> Result<u64, DirectoryError> {
        let user = self.user(username).await?;
        let revoked_before = self
            .revocations
            .record(user.subject()?, username, Revocation::SignOut, now_secs)
            .await?;
        self.global_sign_out(username).await?;
        Ok(revoked_before)
    }

    /// Requires a new password at the next sign-in and signs the user out. An account that never
    /// signed in (FORCE_CHANGE_PASSWORD, which Cognito cannot reset) gets a new invitation with a new
    /// temporary password instead; any other gets Cognito's reset (RESET_REQUIRED, a code by mail).
    pub async fn reset_password(
        &self,
        username: &str,
        now_secs: u64,
    ) -> Result<(), DirectoryError> {
        let user = self.user(username).await?;
        self.sign_out(username, now_secs).await?;
        if user.cognito_status == "FORCE_CHANGE_PASSWORD" {
            return self.reinvite(&user).await;
        }
        self.cognito
            .admin_reset_user_password()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await
            .map_err(failed("reset the password"))
            .map_err(about(username))?;
        Ok(())
    }

    /// Deletes the account; its tokens are refused from now on (the record outlives the account).
    pub async fn delete(&self, username: &str, now_secs: u64) -> Result<(), DirectoryError> {
        let user = self.user(username).await?;
        self.revocations
            .record(user.subject()?, username, Revocation::Disable, now_secs)
            .await?;
        self.cognito
            .admin_delete_user()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .send()
            .await
            .map_err(failed("delete user"))
            .map_err(about(username))?;
        Ok(())
    }

    /// Whether the pool answers (the admin API's health check).
    pub async fn check(&self) -> Result<(), DirectoryError> {
        self.cognito
            .describe_user_pool()
            .user_pool_id(&self.user_pool_id)
            .send()
            .await
            .map_err(failed("describe the user pool"))?;
        Ok(())
    }
}

/// The attributes to write; empty ones are left out (absent is how Cognito says empty).
fn attribute_list(attributes: &Attributes) -> Vec<AttributeType> {
    attributes
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(name, value)| {
            AttributeType::builder()
                .name(name)
                .value(value)
                .build()
                .ok()
        })
        .collect()
}

fn rfc3339(time: &aws_sdk_cognitoidentityprovider::primitives::DateTime) -> Option<String> {
    time.fmt(DateTimeFormat::DateTime).ok()
}

fn user_view(user: &UserType) -> Option<UserView> {
    let username = user.username()?.to_string();
    let attributes: BTreeMap<String, String> = user
        .attributes()
        .iter()
        .map(|a| {
            (
                a.name().to_string(),
                a.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Some(UserView {
        username,
        sub: attributes.get("sub").cloned(),
        attributes,
        department: None,
        enabled: user.enabled(),
        cognito_status: user
            .user_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "UNKNOWN".into()),
        created_at: user.user_create_date().and_then(rfc3339),
        updated_at: user.user_last_modified_date().and_then(rfc3339),
    })
}

/// The settings every function that manages users shares (provisioner, scheduler, admin API), read
/// once at init.
#[derive(Debug, Clone)]
pub struct DirectorySettings {
    pub user_pool_id: String,
    /// A department cell's text (the configured id or one of its names) -> the department id.
    pub departments: BTreeMap<String, String>,
    /// Cognito group of a department: this prefix and its id (`dept-sales`).
    pub department_group_prefix: String,
    /// Where HR dates are meant: minutes east of UTC (540, Japan).
    pub utc_offset_minutes: i32,
    /// The DynamoDB table of revocations the authorizer reads.
    pub revocation_table: String,
    /// The SES identity's address invitations come from; None: Cognito sends its own.
    pub mail_from: Option<String>,
    pub sign_in_url: Option<String>,
}

impl DirectorySettings {
    /// `COGNITO_USER_POOL_ID`, `GATEWAY_DEPARTMENTS` (JSON object: id -> list of names a file may use
    /// for it), `GATEWAY_REVOCATION_TABLE` (all required), `GATEWAY_DEPARTMENT_GROUP_PREFIX`
    /// (`dept-`), `GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES` (540), `GATEWAY_MAIL_FROM` and
    /// `GATEWAY_SIGN_IN_URL` (optional).
    pub fn from_settings(settings: &dyn Settings) -> Result<Self, ConfigError> {
        let raw = config::required(settings, "GATEWAY_DEPARTMENTS")?;
        let invalid = |reason: String| ConfigError::Invalid {
            name: "GATEWAY_DEPARTMENTS",
            reason,
        };
        let by_id: BTreeMap<String, Vec<String>> = serde_json::from_str(&raw)
            .map_err(|e| invalid(format!("not a JSON object of id -> [names]: {e}")))?;
        if by_id.is_empty() {
            return Err(invalid("no department".into()));
        }
        let mut departments = BTreeMap::new();
        for (id, names) in &by_id {
            for name in std::iter::once(id).chain(names) {
                if let Some(other) = departments.insert(name.clone(), id.clone()) {
                    if &other != id {
                        return Err(invalid(format!("{name:?} names both {other} and {id}")));
                    }
                }
            }
        }
        let utc_offset_minutes = match settings.get("GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES") {
            None => 540,
            Some(v) => v
                .parse::<i32>()
                .ok()
                .filter(|m| (-720..=840).contains(m))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "GATEWAY_PROVISIONING_UTC_OFFSET_MINUTES",
                    reason: format!("{v:?} is not minutes between -720 and 840"),
                })?,
        };
        Ok(DirectorySettings {
            user_pool_id: config::required(settings, "COGNITO_USER_POOL_ID")?,
            departments,
            department_group_prefix: settings
                .get("GATEWAY_DEPARTMENT_GROUP_PREFIX")
                .unwrap_or_else(|| "dept-".into()),
            utc_offset_minutes,
            revocation_table: config::required(settings, "GATEWAY_REVOCATION_TABLE")?,
            mail_from: settings.get("GATEWAY_MAIL_FROM"),
            sign_in_url: settings.get("GATEWAY_SIGN_IN_URL"),
        })
    }

    /// The configured department ids.
    pub fn department_ids(&self) -> std::collections::BTreeSet<&str> {
        self.departments.values().map(String::as_str).collect()
    }

    /// The department a cell or a request names (its id or one of its names).
    pub fn department(&self, name: &str) -> Option<&str> {
        self.departments.get(name).map(String::as_str)
    }

    /// Today where HR dates are meant.
    pub fn today(&self, now_millis: u64) -> crate::provisioning::rows::Date {
        crate::provisioning::rows::Date::today(now_millis, self.utc_offset_minutes)
    }

    pub fn directory(&self, sdk: &aws_config::SdkConfig) -> Directory {
        Directory::new(
            Directory::client(sdk),
            self.user_pool_id.clone(),
            self.department_group_prefix.clone(),
            Revocations::new(
                aws_sdk_dynamodb::Client::new(sdk),
                self.revocation_table.clone(),
            ),
            self.mail_from
                .clone()
                .map(|from| Mailer::new(sdk, from, self.sign_in_url.clone())),
        )
    }
}
