//! Accounts for people: argon2id password hashes, one-time initial passwords, lock-out after
//! repeated failures, session secrets and the CSRF tokens derived from them. Systems keep their
//! bearer tokens (`crate::auth`); people log in here.
//!
//! A session cookie is `id.secret`: the id finds the row, and only the SHA-256 of the 256-bit
//! secret is stored, compared in constant time. A form's CSRF token is an HMAC of the secret,
//! so it is bound to the session, needs no storage, and cannot be computed by a page that cannot
//! read the HttpOnly cookie.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::{SessionRow, StateError, StateStore, UserRow};

/// Consecutive failed logins that lock an account.
pub const MAX_FAILURES: u32 = 5;
/// How long a locked account refuses logins, in seconds.
pub const LOCK_SECONDS: i64 = 15 * 60;
/// A session ends this many seconds after login, however active.
pub const SESSION_SECONDS: i64 = 10 * 3600;
/// A session ends after this many seconds without a request.
pub const IDLE_SECONDS: i64 = 30 * 60;
/// The shortest password a person may choose.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Letters and digits that cannot be mistaken for one another when read out or typed.
const PASSWORD_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Account failures.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("login '{0}': 2 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")]
    BadLogin(String),
    #[error("login '{0}' is taken")]
    Taken(String),
    #[error("no account with login '{0}'")]
    Unknown(String),
    #[error("a name is required")]
    NoName,
    #[error("role must be clerk or admin, not '{0}'")]
    BadRole(String),
    #[error("a clerk works for a department: name one from the routing catalog")]
    NoDepartment,
    #[error("department '{0}' is not in the routing catalog")]
    UnknownDepartment(String),
    #[error("an admin account has no department")]
    AdminWithDepartment,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// 16 bytes from the operating system's random source.
fn random16() -> [u8; 16] {
    argon2::password_hash::generate_salt()
}

/// A one-time password: 12 characters from a 32-character alphabet (60 bits).
pub fn one_time_password() -> String {
    random16()[..12]
        .iter()
        .map(|b| PASSWORD_ALPHABET[usize::from(*b) % PASSWORD_ALPHABET.len()] as char)
        .collect()
}

/// The argon2id hash (PHC string) of a password, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

/// Whether `password` matches the stored hash (argon2 compares in constant time).
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::phc::PasswordHash;
    use argon2::password_hash::PasswordVerifier;
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches, verified for unknown logins so that a wrong login takes as long
/// as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        hash_password(&hex::encode(random16())).expect("argon2 with default parameters")
    });
    &DECOY
}

/// Why a new password is refused, in the console's words; `None` when it is acceptable.
pub fn password_problem(new: &str, repeat: &str, login: &str, current: &str) -> Option<String> {
    if new != repeat {
        return Some("两次输入的新密码不一致".into());
    }
    if new.chars().count() < MIN_PASSWORD_CHARS {
        return Some(format!("新密码至少 {MIN_PASSWORD_CHARS} 个字符"));
    }
    if new == current {
        return Some("新密码不能与当前密码相同".into());
    }
    if new.to_lowercase().contains(&login.to_lowercase()) {
        return Some("新密码不能包含登录名".into());
    }
    let classes = [
        new.chars().any(|c| c.is_ascii_lowercase()),
        new.chars().any(|c| c.is_ascii_uppercase()),
        new.chars().any(|c| c.is_ascii_digit()),
        new.chars().any(|c| !c.is_ascii_alphanumeric()),
    ];
    if classes.iter().filter(|x| **x).count() < 2 {
        return Some("新密码须包含至少两类字符（小写字母、大写字母、数字、其他字符）".into());
    }
    None
}

/// A login name: 2–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn valid_login(login: &str) -> bool {
    (2..=64).contains(&login.len())
        && login
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && login
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A fresh random secret (hex of 32 bytes).
fn secret() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&random16());
    bytes[16..].copy_from_slice(&random16());
    hex::encode(bytes)
}

/// A new session for `user_id`: the cookie value, shown to the browser once, and the row to
/// store (the secret's hash only).
pub fn new_session(user_id: &str, now: i64) -> (String, SessionRow) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let secret = secret();
    let row = SessionRow {
        id: id.clone(),
        secret_sha256: Sha256::digest(secret.as_bytes()).into(),
        user_id: user_id.to_string(),
        created_at: now,
        expires_at: now + SESSION_SECONDS,
        idle_until: now + IDLE_SECONDS,
    };
    (format!("{id}.{secret}"), row)
}

/// A fresh secret for the login form's cookie (its CSRF token is derived from it).
pub fn login_secret() -> String {
    secret()
}

/// The (id, secret) of a session cookie value.
pub fn split_cookie(value: &str) -> Option<(&str, &str)> {
    let (id, secret) = value.split_once('.')?;
    (!id.is_empty() && secret.len() == 64).then_some((id, secret))
}

/// Whether a presented secret is the one whose hash is stored, in constant time.
pub fn secret_matches(secret: &str, stored: &[u8; 32]) -> bool {
    let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    presented.ct_eq(stored).into()
}

/// The CSRF token of the forms of a session (or of the login form): HMAC-SHA256 of a fixed
/// label under the cookie's secret.
pub fn csrf_token(secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(b"shenguan console form");
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a form's token belongs to the cookie's secret, in constant time.
pub fn csrf_matches(secret: &str, presented: &str) -> bool {
    let expected = csrf_token(secret);
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// What an admin asks for when creating an account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub login: String,
    pub name: String,
    /// `clerk` or `admin`.
    pub role: String,
    pub department: Option<String>,
}

/// Creates an account with a one-time password, audited as `actor`; returns the account and
/// the password, which is shown this once.
pub async fn create_user(
    store: &dyn StateStore,
    catalog: &crate::route::Catalog,
    new: NewUser,
    actor: &str,
) -> Result<(UserRow, String), AccountError> {
    let login = new.login.trim().to_string();
    if !valid_login(&login) {
        return Err(AccountError::BadLogin(login));
    }
    let name = new.name.trim().to_string();
    if name.is_empty() {
        return Err(AccountError::NoName);
    }
    let department = new
        .department
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    match (new.role.as_str(), &department) {
        ("clerk", None) => return Err(AccountError::NoDepartment),
        ("clerk", Some(d)) if catalog.department(d).is_none() => {
            return Err(AccountError::UnknownDepartment(d.clone()))
        }
        ("admin", Some(_)) => return Err(AccountError::AdminWithDepartment),
        ("clerk" | "admin", _) => {}
        (other, _) => return Err(AccountError::BadRole(other.to_string())),
    }
    let password = one_time_password();
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))??
    };
    let row = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        login: login.clone(),
        name,
        role: new.role.clone(),
        department,
        password_hash: hash,
        must_change: true,
        failed_logins: 0,
        locked_until: None,
        disabled: false,
        created_at: unix_now(),
    };
    if !store.add_user(row.clone()).await? {
        return Err(AccountError::Taken(login));
    }
    store
        .audit(
            actor,
            "user.added",
            &row.login,
            serde_json::json!({"name": row.name, "role": row.role, "department": row.department}),
        )
        .await?;
    tracing::info!(login = %row.login, role = %row.role, actor, "console account added");
    Ok((row, password))
}

/// Gives an account a new one-time password (it must be changed at the next login) and ends its
/// sessions; audited. Returns the password, shown this once.
pub async fn reset_password(
    store: &dyn StateStore,
    login: &str,
    actor: &str,
) -> Result<String, AccountError> {
    let user = store
        .user(login)
        .await?
        .ok_or_else(|| AccountError::Unknown(login.to_string()))?;
    let password = one_time_password();
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))??
    };
    store.set_password(login, &hash, true).await?;
    store.delete_sessions_of(&user.id, None).await?;
    store
        .audit(actor, "user.password_reset", login, serde_json::json!({}))
        .await?;
    Ok(password)
}

/// Disables an account and ends its sessions; audited. `false` when it was not enabled.
pub async fn disable_user(
    store: &dyn StateStore,
    login: &str,
    actor: &str,
) -> Result<bool, AccountError> {
    if store.user(login).await?.is_none() {
        return Err(AccountError::Unknown(login.to_string()));
    }
    let done = store.disable_user(login).await?;
    if done {
        store
            .audit(actor, "user.disabled", login, serde_json::json!({}))
            .await?;
        tracing::info!(login, actor, "console account disabled");
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_against_its_own_hash() {
        let hash = hash_password("Correct horse 9").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("Correct horse 9", &hash));
        assert!(!verify_password("correct horse 9", &hash));
        assert!(!verify_password("Correct horse 9", "not a hash"));
        assert!(!verify_password("anything", decoy_hash()));
    }

    #[test]
    fn one_time_passwords_are_random_and_unambiguous() {
        let a = one_time_password();
        assert_eq!(a.len(), 12);
        assert_ne!(a, one_time_password());
        assert!(a.bytes().all(|b| PASSWORD_ALPHABET.contains(&b)));
    }

    #[test]
    fn csrf_tokens_belong_to_one_session_secret() {
        let (cookie, row) = new_session("u1", 1000);
        let (id, secret) = split_cookie(&cookie).unwrap();
        assert_eq!(id, row.id);
        assert!(secret_matches(secret, &row.secret_sha256));
        assert!(!secret_matches(
            &secret.replace('a', "b"),
            &row.secret_sha256
        ));
        let token = csrf_token(secret);
        assert!(csrf_matches(secret, &token));
        assert!(!csrf_matches(&login_secret(), &token));
        assert!(!csrf_matches(secret, ""));
        assert_eq!(row.expires_at, 1000 + SESSION_SECONDS);
    }

    #[test]
    fn weak_or_mistyped_new_passwords_are_refused() {
        assert!(password_problem("Abcdefgh12", "Abcdefgh13", "zs", "x").is_some());
        assert!(password_problem("Abc12", "Abc12", "zs", "x").is_some());
        assert!(password_problem("abcdefghijk", "abcdefghijk", "zs", "x").is_some());
        assert!(password_problem("zhangsan-2026", "zhangsan-2026", "zhangsan", "x").is_some());
        assert!(password_problem("OLDPASSWORD1", "OLDPASSWORD1", "zs", "OLDPASSWORD1").is_some());
        assert_eq!(
            password_problem("审管联动-2026年度", "审管联动-2026年度", "zs", "x"),
            None
        );
    }

    #[test]
    fn logins_are_plain_lowercase_names() {
        assert!(valid_login("szs-scjg-1"));
        assert!(valid_login("zhang.san"));
        assert!(!valid_login("Zhang"));
        assert!(!valid_login("-x"));
        assert!(!valid_login("a"));
        assert!(!valid_login("张三"));
    }
}
