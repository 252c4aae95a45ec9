//! The directory (the Cognito user pool) as provisioning sees it: read every user and their department
//! group, and apply planned changes. Usernames are the employee user_ids.

use std::collections::BTreeMap;

use aws_sdk_cognitoidentityprovider::types::{AttributeType, MessageActionType, UserType};
use aws_sdk_cognitoidentityprovider::Client;
use gateway_shared::provisioning::plan::{self, Attributes, Change, DirectoryUser, PlannedRow};

#[derive(Debug, thiserror::Error)]
#[error("{action}: {message}")]
pub struct DirectoryError {
    pub action: &'static str,
    pub message: String,
}

fn failed<E: std::error::Error + 'static>(
    action: &'static str,
) -> impl FnOnce(E) -> DirectoryError {
    move |e| DirectoryError {
        action,
        message: aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(e).to_string(),
    }
}

pub struct Directory {
    cognito: Client,
    user_pool_id: String,
    group_prefix: String,
}

impl Directory {
    pub fn new(cognito: Client, user_pool_id: String, group_prefix: String) -> Self {
        Directory {
            cognito,
            user_pool_id,
            group_prefix,
        }
    }

    fn group(&self, department: &str) -> String {
        format!("{}{department}", self.group_prefix)
    }

    /// Every user, with their department (from the department groups in `departments`).
    pub async fn users(
        &self,
        departments: impl Iterator<Item = &str>,
    ) -> Result<BTreeMap<String, DirectoryUser>, DirectoryError> {
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
                if let Some(found) = directory_user(user) {
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

    /// Applies one planned row. Each step is idempotent, so a run cut off halfway is finished by the
    /// next run of the same file (which plans from what the cut-off run left).
    pub async fn apply(&self, row: &PlannedRow) -> Result<(), DirectoryError> {
        match &row.change {
            Change::Unchanged => Ok(()),
            Change::Create {
                attributes,
                department,
                enabled,
            } => {
                let mut create = self
                    .cognito
                    .admin_create_user()
                    .user_pool_id(&self.user_pool_id)
                    .username(&row.user_id)
                    .set_user_attributes(Some(attribute_list(attributes)));
                if !enabled {
                    // A future starter's temporary password would expire before the start date;
                    // the invitation goes out when the account is enabled.
                    create = create.message_action(MessageActionType::Suppress);
                }
                create.send().await.map_err(failed("create user"))?;
                self.add_to_group(&row.user_id, department).await?;
                if !enabled {
                    self.set_enabled(&row.user_id, false).await?;
                }
                Ok(())
            }
            Change::Update {
                attributes,
                move_department,
                set_enabled,
            } => {
                let set = attribute_list(attributes);
                if !set.is_empty() {
                    self.cognito
                        .admin_update_user_attributes()
                        .user_pool_id(&self.user_pool_id)
                        .username(&row.user_id)
                        .set_user_attributes(Some(set))
                        .send()
                        .await
                        .map_err(failed("update user attributes"))?;
                }
                // An emptied cell removes the attribute (Cognito keeps no empty values).
                let cleared: Vec<String> = attributes
                    .iter()
                    .filter(|(_, value)| value.is_empty())
                    .map(|(name, _)| name.clone())
                    .collect();
                if !cleared.is_empty() {
                    self.cognito
                        .admin_delete_user_attributes()
                        .user_pool_id(&self.user_pool_id)
                        .username(&row.user_id)
                        .set_user_attribute_names(Some(cleared))
                        .send()
                        .await
                        .map_err(failed("delete user attributes"))?;
                }
                if let Some((from, to)) = move_department {
                    self.add_to_group(&row.user_id, to).await?;
                    if let Some(from) = from {
                        self.cognito
                            .admin_remove_user_from_group()
                            .user_pool_id(&self.user_pool_id)
                            .username(&row.user_id)
                            .group_name(self.group(from))
                            .send()
                            .await
                            .map_err(failed("remove user from group"))?;
                    }
                }
                if let Some(enabled) = set_enabled {
                    self.set_enabled(&row.user_id, *enabled).await?;
                }
                Ok(())
            }
        }
    }

    async fn add_to_group(&self, username: &str, department: &str) -> Result<(), DirectoryError> {
        self.cognito
            .admin_add_user_to_group()
            .user_pool_id(&self.user_pool_id)
            .username(username)
            .group_name(self.group(department))
            .send()
            .await
            .map_err(failed("add user to group"))?;
        Ok(())
    }

    async fn set_enabled(&self, username: &str, enabled: bool) -> Result<(), DirectoryError> {
        if enabled {
            self.cognito
                .admin_enable_user()
                .user_pool_id(&self.user_pool_id)
                .username(username)
                .send()
                .await
                .map_err(failed("enable user"))?;
        } else {
            self.cognito
                .admin_disable_user()
                .user_pool_id(&self.user_pool_id)
                .username(username)
                .send()
                .await
                .map_err(failed("disable user"))?;
            // A disabled user's refresh tokens must not mint new access tokens.
            self.cognito
                .admin_user_global_sign_out()
                .user_pool_id(&self.user_pool_id)
                .username(username)
                .send()
                .await
                .map_err(failed("sign user out"))?;
        }
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

fn directory_user(user: &UserType) -> Option<DirectoryUser> {
    let username = user.username()?.to_string();
    let attributes = user
        .attributes()
        .iter()
        .filter(|a| plan::is_owned(a.name()))
        .map(|a| {
            (
                a.name().to_string(),
                a.value().unwrap_or_default().to_string(),
            )
        })
        .collect();
    Some(DirectoryUser {
        username,
        attributes,
        department: None,
        enabled: user.enabled(),
    })
}
