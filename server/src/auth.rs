//! Who may do what: users with argon2-hashed passwords, browser sessions,
//! API tokens, sign-in rate limiting and the audit log. Secrets (session
//! cookies, tokens) are stored only as SHA-256 digests, so the database
//! alone lets nobody in. Everything lives in the shared database: any node
//! accepts a session made on another.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use rand::RngCore;
use serde::Serialize;
use sha2::Digest;
use sluice_app::model::{AuditEntry, Role, Session, TokenView};
use sqlx::Row;

use crate::clock::now_ms;
use crate::secrets::{constant_time_eq, random_token};
use crate::store::Store;
use crate::throttle::{Attempt, Limit, Throttle};

/// How long a browser session lasts without signing in again.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a device cookie vouches for a browser that signed in.
pub const DEVICE_TTL: Duration = Duration::from_secs(180 * 86_400);

pub const SESSION_COOKIE: &str = "sluice_session";
pub const DEVICE_COOKIE: &str = "sluice_device";
pub const TOKEN_PREFIX: &str = "slc_";
/// Who made the token from `SLUICE_BOOTSTRAP_TOKEN` (no user).
const BOOTSTRAP_CREATOR: &str = "SLUICE_BOOTSTRAP_TOKEN";

pub struct Auth {
    store: Store,
    throttle: Throttle,
}

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong password or no such user; the wait the failure started, if any.
    #[error("wrong user name or password")]
    Invalid(Option<Limit>),
    #[error("too many failed sign-ins ({}): try again in {} s", .0.scope, .0.wait.as_secs().max(1))]
    Limited(Limit),
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

/// A successful sign-in: the session cookie's secret, who, and a new device
/// cookie for the browser.
pub struct SignedIn {
    pub secret: String,
    pub session: Session,
    pub device_cookie: String,
}

/// A user as the admin API lists them (never the hash).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserView {
    pub username: String,
    pub role: Role,
    pub created: i64,
}

/// A token as made: its secrets, shown this once.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// For `Authorization: Bearer`.
    pub token: String,
    /// For SigV4 (the AWS CLI, SDKs and Terraform).
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// `AKSL` and 16 characters of base32, the shape of AWS's key ids (20
/// characters, upper case), so tools that check it accept it.
fn new_access_key_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    let tail: String = b.iter().map(|x| ALPHABET[(*x & 31) as usize] as char).collect();
    format!("AKSL{tail}")
}

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn digest(secret: &str) -> String {
    let d = sha2::Sha256::digest(secret.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&{
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        b
    })
    .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A user name: 1 to 64 letters, digits, `.`, `_`, `-`, `@`.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)) {
        return Err("1 to 64 letters, digits, '.', '_', '-' or '@'".into());
    }
    Ok(())
}

/// Passwords: at least 12 characters, at most 1024 (argon2 time is bounded).
pub fn check_password(p: &str) -> Result<(), String> {
    match p.chars().count() {
        0..12 => Err("at least 12 characters".into()),
        1025.. => Err("at most 1024 characters".into()),
        _ => Ok(()),
    }
}

impl Auth {
    pub fn new(store: Store) -> Auth {
        Auth { store, throttle: Throttle::default() }
    }

    /// At first start (no users yet) creates `admin`, with `password` or a
    /// random one, returned so it can be printed once. Seeds an admin API
    /// token from `bootstrap_token` when given.
    pub async fn bootstrap(&self, password: Option<&str>, bootstrap_token: Option<&str>) -> Result<Option<String>> {
        let mut generated = None;
        let users: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM users").fetch_one(self.store.pool()).await?.try_get("n")?;
        if users == 0 {
            let pw = match password {
                Some(p) => {
                    check_password(p).map_err(|e| anyhow::anyhow!("SLUICE_ADMIN_PASSWORD: {e}"))?;
                    p.to_string()
                }
                None => {
                    let p = random_token(15);
                    generated = Some(p.clone());
                    p
                }
            };
            // Two nodes starting at once: the second one's insert conflicts, harmlessly.
            if let Err(e) = self.create_user("admin", &pw, Role::Admin).await {
                tracing::info!("first admin not created here: {e:#}");
                generated = None;
            }
        }
        if let Some(t) = bootstrap_token {
            if t.len() < 16 {
                anyhow::bail!("SLUICE_BOOTSTRAP_TOKEN: at least 16 characters");
            }
            let h = digest(t);
            let exists = sqlx::query("SELECT 1 FROM api_tokens WHERE token_hash = $1")
                .bind(&h)
                .fetch_optional(self.store.pool())
                .await?;
            let revoked = sqlx::query("SELECT 1 FROM revoked_tokens WHERE token_hash = $1")
                .bind(&h)
                .fetch_optional(self.store.pool())
                .await?;
            if revoked.is_some() {
                tracing::warn!("SLUICE_BOOTSTRAP_TOKEN names a token an admin deleted: not seeded again (unset it, or choose a new one)");
            } else if exists.is_none() {
                sqlx::query("DELETE FROM api_tokens WHERE name = 'bootstrap'").execute(self.store.pool()).await?;
                let r = sqlx::query("INSERT INTO api_tokens (token_hash, name, role, created_by, created_ms) VALUES ($1, 'bootstrap', 'admin', $2, $3)")
                    .bind(&h)
                    .bind(BOOTSTRAP_CREATOR)
                    .bind(now_ms())
                    .execute(self.store.pool())
                    .await;
                if let Err(e) = r {
                    tracing::info!("bootstrap token not stored here: {e}");
                }
            }
        }
        Ok(generated)
    }

    pub async fn create_user(&self, username: &str, password: &str, role: Role) -> Result<()> {
        let hash = {
            let p = password.to_string();
            tokio::task::spawn_blocking(move || hash_password(&p)).await??
        };
        sqlx::query("INSERT INTO users (username, password, role, created_ms) VALUES ($1, $2, $3, $4)")
            .bind(username)
            .bind(hash)
            .bind(role.as_str())
            .bind(now_ms())
            .execute(self.store.pool())
            .await
            .with_context(|| format!("cannot create user {username}"))?;
        Ok(())
    }

    /// Changes a user's role and/or password; false: no such user. A new
    /// password ends the user's sessions.
    pub async fn update_user(&self, username: &str, password: Option<&str>, role: Option<Role>) -> Result<bool> {
        let mut found = self.user(username).await?.is_some();
        if let Some(r) = role {
            found &= sqlx::query("UPDATE users SET role = $1 WHERE username = $2")
                .bind(r.as_str())
                .bind(username)
                .execute(self.store.pool())
                .await?
                .rows_affected()
                > 0;
        }
        if let Some(p) = password {
            let hash = {
                let p = p.to_string();
                tokio::task::spawn_blocking(move || hash_password(&p)).await??
            };
            found &= sqlx::query("UPDATE users SET password = $1 WHERE username = $2")
                .bind(hash)
                .bind(username)
                .execute(self.store.pool())
                .await?
                .rows_affected()
                > 0;
            sqlx::query("DELETE FROM sessions WHERE username = $1").bind(username).execute(self.store.pool()).await?;
        }
        Ok(found)
    }

    /// Deletes a user, their sessions and the API tokens they made (a
    /// token acts for its maker; it must not outlive them).
    pub async fn delete_user(&self, username: &str) -> Result<bool> {
        sqlx::query("DELETE FROM sessions WHERE username = $1").bind(username).execute(self.store.pool()).await?;
        let made: Vec<String> = sqlx::query_scalar("SELECT name FROM api_tokens WHERE created_by = $1")
            .bind(username)
            .fetch_all(self.store.pool())
            .await?;
        for name in made {
            self.delete_token(&name).await?;
        }
        Ok(sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(username)
            .execute(self.store.pool())
            .await?
            .rows_affected()
            > 0)
    }

    pub async fn admins(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin'")
            .fetch_one(self.store.pool())
            .await?
            .try_get("n")?)
    }

    pub async fn user(&self, username: &str) -> Result<Option<UserView>> {
        Ok(self.users().await?.into_iter().find(|u| u.username == username))
    }

    pub async fn users(&self) -> Result<Vec<UserView>> {
        let rows = sqlx::query("SELECT username, role, created_ms FROM users ORDER BY username")
            .fetch_all(self.store.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UserView {
                    username: r.try_get("username")?,
                    role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Viewer),
                    created: r.try_get("created_ms")?,
                })
            })
            .collect()
    }

    /// Checks a password (throttled, see `crate::throttle`) and opens a
    /// session. `device` is the browser's device cookie, if it sent one.
    pub async fn sign_in(
        &self,
        username: &str,
        password: &str,
        client: &str,
        device: Option<&str>,
    ) -> Result<SignedIn, SignInError> {
        let attempt = Attempt {
            user: username.to_string(),
            address: client.to_string(),
            device: device.and_then(|d| self.device_id(d, username)),
        };
        self.throttle.check(&attempt, Instant::now()).map_err(SignInError::Limited)?;
        let row = sqlx::query("SELECT password, role FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(self.store.pool())
            .await
            .map_err(|e| SignInError::Internal(e.into()))?;
        // An unknown user costs the same argon2 time as a wrong password.
        let (hash, role) = match &row {
            Some(r) => (
                r.try_get::<String, _>("password").unwrap_or_default(),
                r.try_get::<String, _>("role").unwrap_or_default(),
            ),
            None => (DUMMY_HASH.clone(), String::new()),
        };
        let pw = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || verify_password(&pw, &hash)).await.unwrap_or(false) && row.is_some();
        if !ok {
            return Err(SignInError::Invalid(self.throttle.failed(&attempt, Instant::now())));
        }
        self.throttle.succeeded(&attempt, Instant::now());
        let (secret, csrf) = (random_token(32), random_token(24));
        let now = now_ms();
        sqlx::query(
            "INSERT INTO sessions (token_hash, username, csrf, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(digest(&secret))
        .bind(username)
        .bind(&csrf)
        .bind(now)
        .bind(now + SESSION_TTL.as_millis() as i64)
        .execute(self.store.pool())
        .await
        .map_err(|e| SignInError::Internal(e.into()))?;
        Ok(SignedIn {
            secret,
            session: Session { user: username.to_string(), role: Role::parse(&role).unwrap_or(Role::Viewer), csrf },
            device_cookie: self.device_cookie(username),
        })
    }

    /// A device cookie for a browser `user` just signed in from:
    /// `user.issued_ms.id.mac` (user in base64url), MAC under the node key.
    fn device_cookie(&self, user: &str) -> String {
        let body = format!("{}.{}.{}", B64URL.encode(user), now_ms(), random_token(12));
        format!("{body}.{}", self.device_mac(&body))
    }

    fn device_mac(&self, body: &str) -> String {
        B64URL.encode(self.store.sealer().mac(format!("device|{body}").as_bytes()))
    }

    /// The id of a device cookie that is genuine, unexpired and `user`'s.
    fn device_id(&self, cookie: &str, user: &str) -> Option<String> {
        let (body, mac) = cookie.rsplit_once('.')?;
        if !constant_time_eq(mac, &self.device_mac(body)) {
            return None;
        }
        let mut parts = body.splitn(3, '.');
        let (who, issued, id) = (parts.next()?, parts.next()?, parts.next()?);
        let fresh = issued.parse::<i64>().ok()? + DEVICE_TTL.as_millis() as i64 > now_ms();
        (B64URL.decode(who).ok()? == user.as_bytes() && fresh).then(|| id.to_string())
    }

    pub async fn sign_out(&self, secret: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(digest(secret))
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// The session a cookie's secret opens, if it has not expired.
    pub async fn session(&self, secret: &str) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT s.username, s.csrf, u.role FROM sessions s JOIN users u ON u.username = s.username \
             WHERE s.token_hash = $1 AND s.expires_ms > $2",
        )
        .bind(digest(secret))
        .bind(now_ms())
        .fetch_optional(self.store.pool())
        .await?;
        Ok(match row {
            Some(r) => Some(Session {
                user: r.try_get("username")?,
                csrf: r.try_get("csrf")?,
                role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Viewer),
            }),
            None => None,
        })
    }

    /// Who an API token is (`token:NAME`, no CSRF token). A token acts
    /// with at most its maker's current role (a user, or the token that
    /// made it, and so on up), and not at all once a maker is gone; the
    /// bootstrap token has no maker.
    pub async fn token(&self, secret: &str) -> Result<Option<Session>> {
        let Some((hash, who)) = self.token_where("token_hash", &digest(secret)).await? else { return Ok(None) };
        self.touch(&hash).await;
        Ok(Some(who))
    }

    /// The token whose `column` is `value`, and who it acts as.
    async fn token_where(&self, column: &str, value: &str) -> Result<Option<(String, Session)>> {
        let row =
            sqlx::query(&format!("SELECT token_hash, name, role, created_by FROM api_tokens WHERE {column} = $1"))
                .bind(value)
                .fetch_optional(self.store.pool())
                .await?;
        let Some(r) = row else { return Ok(None) };
        let name: String = r.try_get("name")?;
        let Some(role) = self
            .capped(Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Viewer), r.try_get("created_by")?)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((r.try_get("token_hash")?, Session { user: format!("token:{name}"), role, csrf: String::new() })))
    }

    /// Notes that a token was used (shown on the tokens page); a key
    /// pair's use, once its signature holds (`key_pair`'s handle).
    pub async fn touch(&self, token_hash: &str) {
        let _ = sqlx::query("UPDATE api_tokens SET last_used_ms = $1 WHERE token_hash = $2")
            .bind(now_ms())
            .bind(token_hash)
            .execute(self.store.pool())
            .await;
    }

    /// `role` capped by its maker's chain; None: a maker is gone.
    async fn capped(&self, mut role: Role, mut maker: String) -> Result<Option<Role>> {
        for _ in 0..16 {
            if maker == BOOTSTRAP_CREATOR {
                return Ok(Some(role));
            }
            if let Some(token) = maker.strip_prefix("token:") {
                let row = sqlx::query("SELECT role, created_by FROM api_tokens WHERE name = $1")
                    .bind(token)
                    .fetch_optional(self.store.pool())
                    .await?;
                let Some(r) = row else { return Ok(None) };
                role = role.min(Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Viewer));
                maker = r.try_get("created_by")?;
                continue;
            }
            let user: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE username = $1")
                .bind(&maker)
                .fetch_optional(self.store.pool())
                .await?;
            return Ok(user.map(|u| role.min(Role::parse(&u).unwrap_or(Role::Viewer))));
        }
        Ok(None)
    }

    /// A new API token and its AWS-style key pair; the secrets are
    /// returned here and never again.
    pub async fn create_token(&self, name: &str, role: Role, by: &str) -> Result<NewToken> {
        let secret = format!("{TOKEN_PREFIX}{}", random_token(32));
        let hash = digest(&secret);
        let access_key_id = new_access_key_id();
        sqlx::query(
            "INSERT INTO api_tokens (token_hash, name, role, created_by, created_ms, access_key_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&hash)
        .bind(name)
        .bind(role.as_str())
        .bind(by)
        .bind(now_ms())
        .bind(&access_key_id)
        .execute(self.store.pool())
        .await
        .with_context(|| format!("cannot create token {name} (is the name taken?)"))?;
        let secret_access_key = self.secret_access_key(&access_key_id, &hash);
        Ok(NewToken { token: secret, access_key_id, secret_access_key })
    }

    /// A key id's secret: derived from the node key, so it is never stored
    /// and every node of a cluster (same key) derives the same one.
    fn secret_access_key(&self, access_key_id: &str, token_hash: &str) -> String {
        let mac = self.store.sealer().mac(format!("sigv4-secret|{access_key_id}|{token_hash}").as_bytes());
        // 40 characters, as AWS's secret access keys are.
        base64::engine::general_purpose::STANDARD.encode(mac)[..40].to_string()
    }

    /// The token a SigV4 access key id belongs to: its secret access key
    /// (to check the signature), who it acts as (capped as `token`), and a
    /// handle for `touch` once the signature holds.
    pub async fn key_pair(&self, access_key_id: &str) -> Result<Option<(String, Session, String)>> {
        let Some((hash, who)) = self.token_where("access_key_id", access_key_id).await? else { return Ok(None) };
        Ok(Some((self.secret_access_key(access_key_id, &hash), who, hash)))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenView>> {
        let rows = sqlx::query(
            "SELECT name, role, created_by, created_ms, last_used_ms, access_key_id FROM api_tokens ORDER BY name",
        )
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenView {
                    name: r.try_get("name")?,
                    role: Role::parse(&r.try_get::<String, _>("role")?).unwrap_or(Role::Viewer),
                    created_by: r.try_get("created_by")?,
                    created: r.try_get("created_ms")?,
                    last_used: r.try_get("last_used_ms")?,
                    access_key_id: r.try_get("access_key_id")?,
                })
            })
            .collect()
    }

    /// Deletes a token and remembers its digest as revoked (so the
    /// bootstrap token does not come back at the next start).
    pub async fn delete_token(&self, name: &str) -> Result<bool> {
        let hash: Option<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens WHERE name = $1")
            .bind(name)
            .fetch_optional(self.store.pool())
            .await?;
        let Some(hash) = hash else { return Ok(false) };
        let _ = sqlx::query("INSERT INTO revoked_tokens (token_hash, revoked_ms) VALUES ($1, $2)")
            .bind(&hash)
            .bind(now_ms())
            .execute(self.store.pool())
            .await;
        Ok(sqlx::query("DELETE FROM api_tokens WHERE token_hash = $1")
            .bind(&hash)
            .execute(self.store.pool())
            .await?
            .rows_affected()
            > 0)
    }

    pub async fn audit(&self, e: &AuditEntry) -> Result<()> {
        sqlx::query("INSERT INTO audit_log (id, time_ms, actor, action, target, status, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&e.id)
            .bind(e.time)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(e.status as i32)
            .bind(&e.detail)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// The newest `n` changes, newest first.
    pub async fn audit_log(&self, n: usize) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query("SELECT id, time_ms, actor, action, target, status, detail FROM audit_log ORDER BY time_ms DESC, id DESC LIMIT $1")
            .bind(n as i64)
            .fetch_all(self.store.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    time: r.try_get("time_ms")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    status: r.try_get::<i32, _>("status")? as u16,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    /// Drops expired sessions (any node may; it is idempotent).
    pub async fn purge_sessions(&self) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM sessions WHERE expires_ms <= $1")
            .bind(now_ms())
            .execute(self.store.pool())
            .await?
            .rows_affected())
    }
}

/// The hash checked when the user does not exist, so the time taken does
/// not tell which user names exist.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password(&random_token(16)).unwrap_or_default());
