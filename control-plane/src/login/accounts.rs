//! From an external identity to a meshgate user.
//!
//! Rules, in order: a known `(provider, subject)` is that user; otherwise an
//! email the identity **proves** (the provider says it is verified) that
//! equals a user's **verified** email links the identity to that user;
//! otherwise a new user is created, keeping the proven email. Both sides
//! must be verified:
//!
//! - an unverified email at the provider never links, or anyone able to
//!   register that address at some provider could take the account;
//! - an unverified email on the user (one they set themself) never links,
//!   or anyone could claim a victim's address before the victim's first
//!   login and own the account the victim then uses (pre-hijacking). The
//!   proven login takes the address away from the squatter instead.

use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::password;
use crate::crypto;
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::users;

/// What a provider (or an email code, or an exchanged token) vouches for.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    /// Provider id (`oauth` providers), `email`, or `exchange:<issuer id>`.
    pub provider: String,
    /// The provider's stable id for the person.
    pub subject: String,
    /// Email address, lower case, if any.
    pub email: Option<String>,
    /// Whether the provider asserts that the address belongs to the person.
    pub email_verified: bool,
    /// A hint for a new user's name (login, display name).
    pub name_hint: Option<String>,
}

/// The user an identity resolved to.
#[derive(Debug)]
pub struct Resolved {
    /// User id.
    pub user_id: String,
    /// Whether the user was created by this login.
    pub is_new: bool,
}

/// Resolves (and records) `identity` inside `tx`; refuses disabled users.
pub async fn resolve(tx: &mut Tx, state: &AppState, identity: &ExternalIdentity, now: i64) -> ApiResult<Resolved> {
    let email = identity.email.as_deref().and_then(|e| users::check_email(e).ok());
    let verified = email.as_deref().filter(|_| identity.email_verified);
    let known = sqlx::query("SELECT user_id FROM identities WHERE provider = $1 AND subject = $2")
        .bind(&identity.provider)
        .bind(&identity.subject)
        .fetch_optional(&mut **tx)
        .await?;
    let resolved = if let Some(row) = known {
        sqlx::query("UPDATE identities SET last_login_at = $1, email = $2 WHERE provider = $3 AND subject = $4")
            .bind(now)
            .bind(email.as_deref())
            .bind(&identity.provider)
            .bind(&identity.subject)
            .execute(&mut **tx)
            .await?;
        Resolved { user_id: row.try_get(0)?, is_new: false }
    } else {
        let by_email = match verified {
            Some(e) => {
                sqlx::query("SELECT id, email_verified FROM users WHERE email = $1")
                    .bind(e)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            None => None,
        };
        let linked = match by_email {
            Some(row) if row.try_get::<i64, _>(1)? != 0 => Some(row.try_get::<String, _>(0)?),
            Some(row) => {
                release_email(tx, &row.try_get::<String, _>(0)?, identity, now).await?;
                None
            }
            None => None,
        };
        let resolved = match linked {
            Some(user_id) => Resolved { user_id, is_new: false },
            None => Resolved { user_id: create_user(tx, state, identity, verified, now).await?, is_new: true },
        };
        sqlx::query(
            "INSERT INTO identities (provider, subject, user_id, email, created_at, last_login_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(&identity.provider)
        .bind(&identity.subject)
        .bind(&resolved.user_id)
        .bind(email.as_deref())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        resolved
    };
    let disabled = sqlx::query("SELECT disabled FROM users WHERE id = $1")
        .bind(&resolved.user_id)
        .fetch_one(&mut **tx)
        .await?
        .try_get::<i64, _>(0)?;
    if disabled != 0 {
        return Err(ApiError::LoginRejected("this account is disabled"));
    }
    Ok(resolved)
}

/// Takes an unverified address away from `user_id`: the identity being
/// resolved proved it belongs to someone else (or to the same person, who
/// then gets a new account and can have an admin merge them).
async fn release_email(tx: &mut Tx, user_id: &str, identity: &ExternalIdentity, now: i64) -> ApiResult<()> {
    sqlx::query("UPDATE users SET email = NULL, email_verified = 0, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    let detail =
        serde_json::json!({"reason": "unverified address proven by another login", "provider": identity.provider});
    let event = Event {
        action: "user.email_released",
        actor: None,
        target: Some(user_id),
        ip: None,
        outcome: "success",
        detail: Some(detail),
    };
    audit::record(tx, now, event).await?;
    Ok(())
}

/// Creates a passwordless user named after the hint or the email's local
/// part (a random suffix on collision).
async fn create_user(
    tx: &mut Tx,
    state: &AppState,
    identity: &ExternalIdentity,
    verified_email: Option<&str>,
    now: i64,
) -> ApiResult<String> {
    let base = username_base(identity.name_hint.as_deref().or(identity.email.as_deref()));
    let taken = sqlx::query("SELECT 1 FROM users WHERE username = $1").bind(&base).fetch_optional(&mut **tx).await?;
    let username = if taken.is_some() { format!("{base}-{}", crypto::hex(&crypto::random_bytes::<4>())) } else { base };
    // A proven address used by another account cannot reach here (it
    // linked, or was released); an unproven one is not stored.
    let email = match verified_email {
        Some(e) => {
            let used = sqlx::query("SELECT 1 FROM users WHERE email = $1").bind(e).fetch_optional(&mut **tx).await?;
            used.is_none().then_some(e)
        }
        None => None,
    };
    let hash = password::unusable_hash(users::cost(state))?;
    Ok(users::insert(tx, &username, email, &hash, now).await?)
}

/// `[a-z0-9._-]`, at most 40 characters, from the local part of an email or
/// a login; `user` when nothing usable remains.
fn username_base(hint: Option<&str>) -> String {
    let hint = hint.unwrap_or_default();
    let local = hint.split('@').next().unwrap_or_default().to_lowercase();
    let cleaned: String = local
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) { c } else { '-' })
        .take(40)
        .collect();
    let cleaned = cleaned.trim_matches('-').to_string();
    if cleaned.is_empty() { "user".into() } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::username_base;

    #[test]
    fn usernames_from_hints() {
        assert_eq!(username_base(Some("Alice.Smith@Example.org")), "alice.smith");
        assert_eq!(username_base(Some("Zoë Ünicode")), "zo---nicode");
        assert_eq!(username_base(Some("@@")), "user");
        assert_eq!(username_base(None), "user");
        assert_eq!(username_base(Some(&"x".repeat(99))).len(), 40);
    }
}
