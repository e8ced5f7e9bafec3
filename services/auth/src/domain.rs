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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Member => "member",
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

/// What sign-up and sign-in return: the tokens, shown once, and whom they belong to.
#[derive(Clone, Debug)]
pub struct IssuedSession {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: User,
    pub workspaces: Vec<Membership>,
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
