//! The scope policy: a hierarchy of scopes, which groups grant which scopes, which scope each provider
//! operation needs, and which models a route allows. It is data (`policy/scopes.json`, deployed with the
//! stack), and the one place both the authorizer and the route functions take their decision from, so the
//! second check in the route cannot drift from the first.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

use crate::providers::{Access, ModelAt, Operation, Provider};

/// The policy shipped in the repository, used when no other is configured.
pub const DEFAULT_POLICY_JSON: &str = include_str!("../../policy/scopes.json");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("scope policy is not valid JSON for the expected shape: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("scope policy names an undefined scope {scope:?} in {place}")]
    UnknownScope { scope: String, place: String },
    #[error("scope {0:?} has more than one parent; the hierarchy must be a tree")]
    TwoParents(String),
    #[error("scope hierarchy has a cycle through {0:?}")]
    Cycle(String),
    #[error("scope policy grants operation {operation:?} on /{route}, which that route's grammar does not have")]
    UnknownOperation {
        route: &'static str,
        operation: String,
    },
}

/// What the policy knows of the model when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyModel<'a> {
    /// The body was not read (the authorizer never sees it): an operation that names its model in the
    /// body is decided on its scope, and the route decides the model.
    NotRead,
    /// The body was read: its `model`, or `None` if it names none that could be read.
    Read(Option<&'a str>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[allow(dead_code, reason = "format version, checked by deserialization only")]
    version: u32,
    scopes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    token_scope_prefix: String,
    groups: BTreeMap<String, Vec<String>>,
    department_group_prefix: String,
    operations: BTreeMap<Provider, BTreeMap<String, String>>,
    #[serde(default)]
    models: BTreeMap<Provider, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow { required_scope: String },
    Deny { reason: String },
}

/// The admin API's route prefix (its own REST API; locally beside the provider routes).
pub const ADMIN_ROUTE: &str = "admin";

/// The path under the admin route (`/admin/users/1` -> `/users/1`), or None for other paths.
pub fn admin_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?.strip_prefix(ADMIN_ROUTE)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Changing users through the admin API (and its health check).
pub const ADMIN_WRITE_SCOPE: &str = "admin:users";
/// Reading users through the admin API.
pub const ADMIN_READ_SCOPE: &str = "admin:users:read";
/// Issuing, rotating and revoking API keys; reading them.
pub const ADMIN_APIKEYS_SCOPE: &str = "admin:apikeys";
pub const ADMIN_APIKEYS_READ_SCOPE: &str = "admin:apikeys:read";
/// Departments' budgets, usage plans and contacts, usage and chargeback; reading them.
pub const ADMIN_BILLING_SCOPE: &str = "admin:billing";
pub const ADMIN_BILLING_READ_SCOPE: &str = "admin:billing:read";
/// Every admin scope starts so: none may be given to an API key.
pub const ADMIN_SCOPE_PREFIX: &str = "admin";

/// The (write, read) scopes of the admin resource a path below the admin route names, by its first
/// segment; a path naming no known resource falls under users' (the admin API answers it 404).
pub fn admin_resource_scopes(path: &str) -> (&'static str, &'static str) {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "apikeys" => (ADMIN_APIKEYS_SCOPE, ADMIN_APIKEYS_READ_SCOPE),
        "departments" | "reports" => (ADMIN_BILLING_SCOPE, ADMIN_BILLING_READ_SCOPE),
        _ => (ADMIN_WRITE_SCOPE, ADMIN_READ_SCOPE),
    }
}

/// Whether a scope is an admin one (`admin`, `admin:...`).
pub fn is_admin_scope(scope: &str) -> bool {
    scope == ADMIN_SCOPE_PREFIX || scope.starts_with("admin:")
}

#[derive(Debug)]
pub struct Policy {
    parent: HashMap<String, String>,
    known: BTreeSet<String>,
    token_scope_prefix: String,
    groups: BTreeMap<String, Vec<String>>,
    department_group_prefix: String,
    operations: BTreeMap<Provider, BTreeMap<String, String>>,
    models: BTreeMap<Provider, Vec<String>>,
}

impl Policy {
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = serde_json::from_str(text)?;
        let mut parent = HashMap::new();
        let mut known: BTreeSet<String> = BTreeSet::new();
        for (scope, children) in &file.scopes {
            known.insert(scope.clone());
            for child in children {
                known.insert(child.clone());
                if parent.insert(child.clone(), scope.clone()).is_some() {
                    return Err(PolicyError::TwoParents(child.clone()));
                }
            }
        }
        for start in parent.keys() {
            let mut seen = BTreeSet::new();
            let mut cursor = start;
            while let Some(up) = parent.get(cursor) {
                if !seen.insert(up.clone()) {
                    return Err(PolicyError::Cycle(start.clone()));
                }
                cursor = up;
            }
        }
        let check = |scope: &String, place: String| {
            if known.contains(scope) {
                Ok(())
            } else {
                Err(PolicyError::UnknownScope {
                    scope: scope.clone(),
                    place,
                })
            }
        };
        for (group, scopes) in &file.groups {
            for scope in scopes {
                check(scope, format!("group {group}"))?;
            }
        }
        for (provider, ops) in &file.operations {
            for (op, scope) in ops {
                check(scope, format!("operation {}/{op}", provider.route_prefix()))?;
                if !provider.grammar().knows(op) {
                    return Err(PolicyError::UnknownOperation {
                        route: provider.route_prefix(),
                        operation: op.clone(),
                    });
                }
            }
        }
        Ok(Policy {
            parent,
            known,
            token_scope_prefix: file.token_scope_prefix,
            groups: file.groups,
            department_group_prefix: file.department_group_prefix,
            operations: file.operations,
            models: file.models,
        })
    }

    /// Groups the policy grants scopes to (the local stack and the CDK stack create them).
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    pub fn department_group_prefix(&self) -> &str {
        &self.department_group_prefix
    }

    pub fn default_policy() -> Result<Policy, PolicyError> {
        Policy::from_json(DEFAULT_POLICY_JSON)
    }

    /// Scopes a principal holds: those named in the token's scope claim (with the resource-server prefix,
    /// e.g. `gateway/text`) plus those its groups grant. Unknown names are dropped, never widened.
    pub fn granted_scopes<'a>(
        &self,
        token_scopes: impl IntoIterator<Item = &'a str>,
        groups: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<String> {
        let mut granted = BTreeSet::new();
        for scope in token_scopes {
            let name = scope
                .strip_prefix(self.token_scope_prefix.as_str())
                .unwrap_or(scope);
            if self.known.contains(name) {
                granted.insert(name.to_string());
            }
        }
        for group in groups {
            if let Some(scopes) = self.groups.get(group) {
                granted.extend(scopes.iter().cloned());
            }
        }
        granted
    }

    /// The principal's department: the first (alphabetically) group carrying the department prefix.
    pub fn department<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> Option<String> {
        groups
            .into_iter()
            .filter_map(|g| g.strip_prefix(self.department_group_prefix.as_str()))
            .filter(|d| !d.is_empty())
            .min()
            .map(str::to_string)
    }

    /// The scope an operation needs: its own entry, nothing else (no prefix fallback, so a path can
    /// never borrow a neighbour's scope). Unlisted operations are denied.
    pub fn required_scope(&self, provider: Provider, operation: &str) -> Option<&str> {
        self.operations
            .get(&provider)?
            .get(operation)
            .map(String::as_str)
    }

    /// The admin API's rule, the same in the authorizer and in the admin API: the resource the path
    /// (below the admin route) names picks the scope pair ([`admin_resource_scopes`]); reading (GET,
    /// HEAD) needs its read scope (which the write scope includes), anything else the write scope.
    pub fn decide_admin<'a>(
        &self,
        method: &str,
        path: &str,
        granted: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Decision {
        let (write, read) = admin_resource_scopes(path);
        let required = if matches!(method, "GET" | "HEAD") {
            read
        } else {
            write
        };
        if !self.known.contains(required) {
            return Decision::Deny {
                reason: format!(
                    "the scope policy defines no scope '{required}': the admin API is closed"
                ),
            };
        }
        if !self.permits(granted, required) {
            return Decision::Deny {
                reason: format!(
                    "scope '{required}' is required for {method} on /admin, and your account does not hold it"
                ),
            };
        }
        Decision::Allow {
            required_scope: required.to_string(),
        }
    }

    /// Whether the policy defines `scope`.
    pub fn knows(&self, scope: &str) -> bool {
        self.known.contains(scope)
    }

    /// Every scope the policy defines.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.known.iter().map(String::as_str)
    }

    /// Whether holding `granted` covers `required`: the scope itself or any ancestor of it.
    pub fn permits<'a>(
        &self,
        granted: impl IntoIterator<Item = &'a str> + Clone,
        required: &str,
    ) -> bool {
        let mut cursor = Some(required);
        while let Some(scope) = cursor {
            if granted.clone().into_iter().any(|g| g == scope) {
                return true;
            }
            cursor = self.parent.get(scope).map(String::as_str);
        }
        false
    }

    /// Whether the route has a model allow-list (then a model that cannot be read is refused).
    pub fn restricts_models(&self, provider: Provider) -> bool {
        self.models.contains_key(&provider)
    }

    /// Whether `model` passes the route's allow-list. A model that is not well-formed for the provider
    /// never passes, and a pattern never matches across `/` or through `..`.
    pub fn model_allowed(&self, provider: Provider, model: &str) -> bool {
        match self.models.get(&provider) {
            None => true,
            Some(patterns) => {
                provider.model_syntax(model)
                    && !model.contains("..")
                    && patterns.iter().any(|p| glob_match(p, model))
            }
        }
    }

    /// The whole decision for one request. Reasons are shown to the caller, so they name the scope and
    /// operation but nothing about the token.
    pub fn decide<'a>(
        &self,
        provider: Provider,
        operation: &Operation,
        granted: impl IntoIterator<Item = &'a str> + Clone,
        body_model: BodyModel<'_>,
    ) -> Decision {
        let route = provider.route_prefix();
        let Some(required) = self.required_scope(provider, operation.name) else {
            let reason = match operation.access {
                Access::Stored => format!(
                    "operation '{}' lists, reads or changes objects stored at the provider under the gateway's shared key, and the policy of /{route} does not grant it",
                    operation.name
                ),
                Access::Relay => format!(
                    "operation '{}' is not available through the gateway route /{route}",
                    operation.name
                ),
            };
            return Decision::Deny { reason };
        };
        if !self.permits(granted, required) {
            return Decision::Deny {
                reason: format!(
                    "scope '{required}' is required for '{}' on /{route}, and your account does not hold it",
                    operation.name
                ),
            };
        }
        let model = match (operation.model_at, body_model) {
            (ModelAt::Path, _) => operation.model.as_deref(),
            (ModelAt::Body, BodyModel::Read(model)) => {
                if model.is_none() && self.restricts_models(provider) {
                    return Decision::Deny {
                        reason: format!(
                            "'{}' on /{route} must name its model in a JSON body field 'model', which the gateway checks against the route's model allow-list",
                            operation.name
                        ),
                    };
                }
                model
            }
            (ModelAt::Body, BodyModel::NotRead) | (ModelAt::Nowhere, _) => None,
        };
        if let Some(model) = model {
            if !self.model_allowed(provider, model) {
                return Decision::Deny {
                    reason: format!("model '{model}' is not allowed on /{route}"),
                };
            }
        }
        Decision::Allow {
            required_scope: required.to_string(),
        }
    }
}

/// `*` matches any run of characters but `/`; everything else matches itself. So an allow-list entry
/// for a family of model ids never admits a path (`anthropic.claude-*` does not match
/// `anthropic.claude-x/../amazon.nova`).
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern_slashes = pattern.matches('/').count();
    if text.matches('/').count() != pattern_slashes {
        return false;
    }
    if pattern_slashes > 0 {
        return pattern
            .split('/')
            .zip(text.split('/'))
            .all(|(p, t)| glob_match(p, t));
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return text.is_empty(),
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::default_policy().unwrap()
    }

    fn op(name: &'static str, model: Option<&str>) -> Operation {
        Operation {
            name,
            model: model.map(str::to_string),
            model_at: ModelAt::Path,
            access: Access::Relay,
        }
    }

    #[test]
    fn hierarchy_grants_descendants_only() {
        let p = policy();
        assert!(p.permits(["all"], "text:claude"));
        assert!(p.permits(["text"], "text:gemini"));
        assert!(!p.permits(["text"], "audio:stt"));
        assert!(!p.permits(["text:openai"], "text:gemini"));
        assert!(!p.permits(["text:openai"], "text"));
    }

    #[test]
    fn groups_and_prefixed_token_scopes_grant() {
        let p = policy();
        let granted = p.granted_scopes(
            ["gateway/audio", "aws.cognito.signin.user.admin"],
            ["gateway-openai", "dept-x"],
        );
        assert_eq!(
            granted,
            BTreeSet::from(["audio".to_string(), "text:openai".to_string()])
        );
        assert_eq!(
            p.department(["gateway-all", "dept-sales", "dept-eng"])
                .as_deref(),
            Some("eng")
        );
        assert_eq!(p.department(["gateway-all"]), None);
    }

    #[test]
    fn decide_checks_operation_scope_and_model() {
        let p = policy();
        let decide = |provider, operation: &Operation, granted: &[&str]| {
            p.decide(
                provider,
                operation,
                granted.iter().copied(),
                BodyModel::NotRead,
            )
        };
        let allow = decide(
            Provider::AzureOpenAi,
            &op("chat.completions", Some("gpt")),
            &["text"],
        );
        assert_eq!(
            allow,
            Decision::Allow {
                required_scope: "text:openai".into()
            }
        );
        let audio = decide(
            Provider::AzureOpenAi,
            &op("audio.transcriptions", Some("whisper")),
            &["text"],
        );
        assert!(matches!(audio, Decision::Deny { reason } if reason.contains("audio:stt")));
        let titan = decide(
            Provider::BedrockClaude,
            &op("invoke", Some("amazon.titan-text-express-v1")),
            &["all"],
        );
        assert!(matches!(titan, Decision::Deny { reason } if reason.contains("model")));
        for model in [
            "us.anthropic.claude-3-5-sonnet-20240620-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
        ] {
            let allowed = decide(Provider::BedrockClaude, &op("converse", Some(model)), &["text:claude"]);
            assert!(matches!(allowed, Decision::Allow { .. }), "{model}");
        }
    }

    #[test]
    fn operations_match_exactly_and_stored_objects_need_a_grant() {
        let p = policy();
        let stored = Operation {
            access: Access::Stored,
            ..op("files.list", None)
        };
        let denied = p.decide(Provider::AzureOpenAi, &stored, ["all"], BodyModel::NotRead);
        assert!(matches!(denied, Decision::Deny { reason } if reason.contains("shared key")));
        // No longest-prefix fallback: a deeper path never borrows its parent's scope.
        assert_eq!(
            p.required_scope(Provider::AzureOpenAi, "chat.completions.x"),
            None
        );
        assert_eq!(
            p.required_scope(Provider::AzureOpenAi, "responses.resp_1"),
            None
        );
        let granted = DEFAULT_POLICY_JSON.replace(
            "\"responses\": \"text:openai\",",
            "\"responses\": \"text:openai\", \"files.list\": \"text:openai\",",
        );
        let p2 = Policy::from_json(&granted).unwrap();
        assert!(matches!(
            p2.decide(Provider::AzureOpenAi, &stored, ["text"], BodyModel::NotRead),
            Decision::Allow { .. }
        ));
        let typo = DEFAULT_POLICY_JSON.replace(
            "\"responses\": \"text:openai\"",
            "\"respones\": \"text:openai\"",
        );
        assert!(matches!(
            Policy::from_json(&typo),
            Err(PolicyError::UnknownOperation { .. })
        ));
    }

    #[test]
    fn body_models_are_checked_and_never_fail_open() {
        let restricted = DEFAULT_POLICY_JSON.replace(
            "\"models\": {",
            "\"models\": {\"azure-openai\": [\"gpt-4o*\"],",
        );
        let p = Policy::from_json(&restricted).unwrap();
        let v1 = Operation {
            model_at: ModelAt::Body,
            ..op("chat.completions", None)
        };
        let decide = |body| p.decide(Provider::AzureOpenAi, &v1, ["text"], body);
        assert!(matches!(decide(BodyModel::NotRead), Decision::Allow { .. }));
        assert!(matches!(
            decide(BodyModel::Read(Some("gpt-4o-mini"))),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            decide(BodyModel::Read(Some("o1-pro"))),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            decide(BodyModel::Read(Some("gpt-4o/../o1"))),
            Decision::Deny { .. }
        ));
        assert!(
            matches!(decide(BodyModel::Read(None)), Decision::Deny { reason } if reason.contains("JSON body"))
        );
        // Without an allow-list the model is only recorded.
        let open = policy();
        assert!(matches!(
            open.decide(Provider::AzureOpenAi, &v1, ["text"], BodyModel::Read(None)),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn rejects_inconsistent_policies() {
        let bad = DEFAULT_POLICY_JSON.replace(
            "\"gateway-audio\": [\"audio\"]",
            "\"gateway-audio\": [\"sound\"]",
        );
        assert!(matches!(
            Policy::from_json(&bad),
            Err(PolicyError::UnknownScope { .. })
        ));
        let two = DEFAULT_POLICY_JSON.replace(
            "\"image\": [\"image:generate\"]",
            "\"image\": [\"image:generate\", \"text:openai\"]",
        );
        assert!(matches!(
            Policy::from_json(&two),
            Err(PolicyError::TwoParents(_))
        ));
    }

    #[test]
    fn allow_list_patterns_never_match_a_path() {
        let p = policy();
        for model in [
            "anthropic.claude-3-5-sonnet-20241022-v2:0/../amazon.nova-pro-v1:0",
            "anthropic.claude-3-5-sonnet-20241022-v2:0/amazon.nova-pro-v1:0",
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova/anthropic.claude-x",
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0#anthropic.claude-",
        ] {
            assert!(!p.model_allowed(Provider::BedrockClaude, model), "{model}");
        }
        assert!(!glob_match("anthropic.claude-*", "anthropic.claude-x/y"));
        assert!(glob_match("a:*/b-*", "a:x/b-y"));
        assert!(!glob_match("a:*/b-*", "a:x/z/b-y"));
    }

    #[test]
    fn glob() {
        assert!(glob_match("anthropic.claude-*", "anthropic.claude-3-haiku"));
        assert!(glob_match("*.anthropic.claude-*", "eu.anthropic.claude-3"));
        assert!(!glob_match("anthropic.claude-*", "amazon.titan"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
    }
}
