//! Validated input and the values the service hands back.
//!
//! Each input type can only be built through its `parse`, so code that holds one knows it is valid
//! (the "parse, don't validate" style).

use crate::error::ValidationError;

/// The longest email address accepted (RFC 5321's path limit).
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 256;
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
pub const MAX_WORKSPACE_NAME_CHARS: usize = 100;
pub const MAX_API_KEY_NAME_CHARS: usize = 100;

/// A plausible email address, trimmed and lowercased: one `@`, a non-empty local part, and a
/// domain made of at least two non-empty dot-separated labels. No whitespace or control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let email = normalize_email(raw);
        if email.chars().count() > MAX_EMAIL_CHARS
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ValidationError::InvalidEmail);
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err(ValidationError::InvalidEmail);
        };
        let domain_is_valid = domain.contains('.')
            && !domain.contains('@')
            && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || !domain_is_valid {
            return Err(ValidationError::InvalidEmail);
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The form in which emails are stored and looked up: trimmed and lowercased.
pub fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// A password of an acceptable length, as typed (never trimmed: spaces are part of it).
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            Err(ValidationError::WeakPassword)
        } else if chars > MAX_PASSWORD_CHARS {
            Err(ValidationError::InvalidPassword)
        } else {
            Ok(Self(raw.to_owned()))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Password(***)")
    }
}

/// A trimmed, non-empty display name of at most 100 characters, without control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let name = raw.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(ValidationError::InvalidDisplayName);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A trimmed, non-empty name of at most `max_chars` characters, without control characters.
fn parse_name(raw: &str, max_chars: usize) -> Option<String> {
    let name = raw.trim();
    let chars = name.chars().count();
    (chars > 0 && chars <= max_chars && !name.chars().any(char::is_control))
        .then(|| name.to_owned())
}

/// A workspace's name: trimmed, 1 to 100 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceName(String);

impl WorkspaceName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        parse_name(raw, MAX_WORKSPACE_NAME_CHARS)
            .map(Self)
            .ok_or(ValidationError::InvalidWorkspaceName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An API key's label: trimmed, 1 to 100 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyName(String);

impl ApiKeyName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        parse_name(raw, MAX_API_KEY_NAME_CHARS)
            .map(Self)
            .ok_or(ValidationError::InvalidApiKeyName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    /// Manages the workspace's agents; membership stays with owners.
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    /// `owner`, `admin` or `member`; empty means `member` (the default when adding someone).
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        match raw.trim() {
            "" | "member" => Ok(Self::Member),
            "admin" => Ok(Self::Admin),
            "owner" => Ok(Self::Owner),
            _ => Err(ValidationError::InvalidRole),
        }
    }

    /// The role as stored; anything unexpected reads as the least role.
    pub fn from_stored(stored: &str) -> Self {
        match stored {
            "owner" => Self::Owner,
            "admin" => Self::Admin,
            _ => Self::Member,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
}

/// A workspace as seen by one of its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub workspace_id: String,
    pub workspace_name: String,
    /// `owner` or `member`, as stored.
    pub role: String,
}

/// What sign-up, sign-in and refresh return: the tokens, shown once, and whom they belong to.
#[derive(Clone, Debug)]
pub struct IssuedSession {
    pub session_id: String,
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: User,
    pub workspaces: Vec<Membership>,
}

/// A member of a workspace, as listed to the other members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub user: User,
    /// `owner` or `member`, as stored.
    pub role: String,
    /// Unix milliseconds.
    pub joined_at: i64,
}

/// An API key as listed to its owner (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A freshly created API key: the key in clear is returned this once.
#[derive(Clone, Debug)]
pub struct CreatedApiKey {
    pub api_key: ApiKey,
    pub key: String,
}

/// Whom an API key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyIdentity {
    pub api_key_id: String,
    pub user_id: String,
}

/// A session or API key revoked recently enough to matter, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    Session {
        session_id: String,
    },
    ApiKey {
        api_key_id: String,
    },
    /// Every session and API key of the revocation's user: the account was deleted.
    User,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub revoked: Revoked,
    pub user_id: String,
    /// Unix milliseconds after which nothing of it can still be valid.
    pub until: i64,
}

/// Whom a valid access token belongs to.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: User,
    pub workspaces: Vec<Membership>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let email = Email::parse("  Alice.Smith@Example.COM \n").map(|e| e.0);
        assert_eq!(email, Ok("alice.smith@example.com".to_owned()));
    }

    #[test]
    fn malformed_emails_are_rejected() {
        let long = format!("{}@example.com", "a".repeat(250));
        for raw in [
            "",
            "   ",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "alice@@example.com",
            "alice@exa@mple.com",
            "alice@.example.com",
            "alice@example.com.",
            "alice@example..com",
            "al ice@example.com",
            "alice@exam\u{0}ple.com",
            long.as_str(),
        ] {
            assert_eq!(
                Email::parse(raw),
                Err(ValidationError::InvalidEmail),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn passwords_must_have_8_to_256_characters() {
        assert_eq!(
            Password::parse("1234567").err(),
            Some(ValidationError::WeakPassword)
        );
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"é".repeat(256)).is_ok());
        assert_eq!(
            Password::parse(&"x".repeat(257)).err(),
            Some(ValidationError::InvalidPassword)
        );
    }

    #[test]
    fn workspace_and_api_key_names_are_trimmed_and_bounded() {
        assert_eq!(
            WorkspaceName::parse("  Team  ").map(|name| name.0),
            Ok("Team".to_owned())
        );
        assert_eq!(
            WorkspaceName::parse(&"x".repeat(101)),
            Err(ValidationError::InvalidWorkspaceName)
        );
        assert_eq!(
            ApiKeyName::parse(" \t "),
            Err(ValidationError::InvalidApiKeyName)
        );
        assert_eq!(
            ApiKeyName::parse("ci\u{0}"),
            Err(ValidationError::InvalidApiKeyName)
        );
        assert!(ApiKeyName::parse("deploy bot").is_ok());
    }

    #[test]
    fn roles_parse_with_member_as_the_default() {
        assert_eq!(Role::parse(""), Ok(Role::Member));
        assert_eq!(Role::parse("member"), Ok(Role::Member));
        assert_eq!(Role::parse("owner"), Ok(Role::Owner));
        assert_eq!(Role::parse(" admin "), Ok(Role::Admin));
        assert_eq!(Role::from_stored("admin"), Role::Admin);
        assert_eq!(Role::parse("root"), Err(ValidationError::InvalidRole));
        assert_eq!(Role::from_stored("owner"), Role::Owner);
        assert_eq!(Role::from_stored("???"), Role::Member);
    }

    #[test]
    fn display_names_are_trimmed_and_must_have_1_to_100_characters() {
        assert_eq!(
            DisplayName::parse("  Alice  ").map(|n| n.0),
            Ok("Alice".to_owned())
        );
        assert!(DisplayName::parse(&"ü".repeat(100)).is_ok());
        for raw in ["", "   ", "a\u{7}b"] {
            assert_eq!(
                DisplayName::parse(raw),
                Err(ValidationError::InvalidDisplayName)
            );
        }
        assert_eq!(
            DisplayName::parse(&"x".repeat(101)),
            Err(ValidationError::InvalidDisplayName)
        );
    }
}
