//! Settings: one struct, read from flags with environment variables as
//! fallbacks (clap), every field documented with unit, default and reason.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Command line of the `meshgate` binary.
#[derive(Debug, Parser)]
#[command(name = "meshgate", version, about = "meshgate control plane")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Sub-commands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the control plane HTTP service.
    Serve(Box<Config>),
}

/// Signature algorithm for newly generated signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigningAlg {
    /// Ed25519 (`EdDSA`): the default; small keys, fast, deterministic-safe.
    #[value(name = "EdDSA")]
    EdDsa,
    /// ECDSA P-256 (`ES256`), for verifiers without Ed25519 support.
    #[value(name = "ES256")]
    Es256,
    /// HMAC-SHA256 (`HS256`): a shared secret, shipped to filters over the
    /// sync feed only and never published in JWKS.
    #[value(name = "HS256")]
    Hs256,
}

impl SigningAlg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Es256 => "ES256",
            Self::Hs256 => "HS256",
        }
    }

    /// Parses a JOSE `alg` name as stored in the database.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Self::EdDsa),
            "ES256" => Some(Self::Es256),
            "HS256" => Some(Self::Hs256),
            _ => None,
        }
    }
}

/// Every setting of the service.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8081` (loopback: exposing the
    /// control plane is a deliberate operator choice).
    #[arg(long, env = "MESHGATE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Database URL: `sqlite://path?mode=rwc` or `postgres://…`. Default: a
    /// SQLite file `meshgate.db` in the data directory.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory for local state (SQLite file, generated master key).
    /// Default `./data`.
    #[arg(long, env = "MESHGATE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Username of the admin created on an empty database. Default `admin`.
    #[arg(long, env = "MESHGATE_ADMIN_USER", default_value = "admin")]
    pub admin_user: String,

    /// Password of the bootstrap admin. When unset, one is generated and
    /// printed once on first start.
    #[arg(long, env = "MESHGATE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// 32-byte key (base64 or 64 hex chars) that encrypts signing keys at
    /// rest. When unset, one is generated into `<data_dir>/master.key`
    /// (fine locally; replicas must share one through this variable).
    #[arg(long, env = "MESHGATE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// `iss` of every token, and the base of the OpenID discovery document.
    /// Default `http://127.0.0.1:8081`.
    #[arg(long, env = "MESHGATE_ISSUER", default_value = "http://127.0.0.1:8081")]
    pub issuer: String,

    /// `aud` of every access token. Default `meshgate`.
    #[arg(long, env = "MESHGATE_AUDIENCE", default_value = "meshgate")]
    pub audience: String,

    /// Algorithm for new signing keys. Default `EdDSA`.
    #[arg(long, env = "MESHGATE_SIGNING_ALG", value_enum, default_value = "EdDSA")]
    pub signing_alg: SigningAlg,

    /// Seconds a new signing key is published (JWKS, sync feed) before a
    /// rotation may make it sign. Default 60: longer than the JWKS cache
    /// lifetime and a filter's sync interval.
    #[arg(long, env = "MESHGATE_KEY_PUBLISH", default_value_t = 60)]
    pub key_publish_secs: i64,

    /// Access token lifetime in seconds. Default 900 (15 min): short, because
    /// revocation reaches filters only through the sync feed.
    #[arg(long, env = "MESHGATE_ACCESS_TTL", default_value_t = 900)]
    pub access_ttl_secs: i64,

    /// Refresh token (and session) lifetime in seconds. Default 2592000 (30 days).
    #[arg(long, env = "MESHGATE_REFRESH_TTL", default_value_t = 2_592_000)]
    pub refresh_ttl_secs: i64,

    /// Window in seconds in which re-presenting a just-used refresh token
    /// returns the same successor (client retries after a lost response)
    /// instead of being treated as theft. Default 5.
    #[arg(long, env = "MESHGATE_REFRESH_GRACE", default_value_t = 5)]
    pub refresh_grace_secs: i64,

    /// Failed logins per account within the window before lockout. Default 5.
    #[arg(long, env = "MESHGATE_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures_per_account: u32,

    /// Failed logins per client IP within the window before lockout. Default 20.
    #[arg(long, env = "MESHGATE_LOGIN_MAX_FAILURES_IP", default_value_t = 20)]
    pub login_max_failures_per_ip: u32,

    /// Failure counting window and lockout duration in seconds. Default 900.
    #[arg(long, env = "MESHGATE_LOGIN_LOCKOUT", default_value_t = 900)]
    pub login_lockout_secs: i64,

    /// Argon2id memory cost in KiB. Default 19456 (OWASP minimum profile).
    #[arg(long, env = "MESHGATE_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations. Default 2.
    #[arg(long, env = "MESHGATE_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Largest accepted request body in bytes. Default 65536.
    #[arg(long, env = "MESHGATE_MAX_BODY", default_value_t = 65_536)]
    pub max_body_bytes: usize,

    /// Longest API key lifetime in days. Default and ceiling 365.
    #[arg(long, env = "MESHGATE_APIKEY_MAX_DAYS", default_value_t = 365)]
    pub apikey_max_days: i64,

    /// Prefix of generated API keys (2–16 chars `[a-z0-9]`). Default `mg`.
    #[arg(long, env = "MESHGATE_APIKEY_PREFIX", default_value = "mg")]
    pub apikey_prefix: String,

    /// Take the client IP from the last `X-Forwarded-For` entry, the one the
    /// trusted proxy in front appended (only behind exactly one such proxy).
    /// Default false.
    #[arg(long, env = "MESHGATE_TRUST_FORWARDED", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// Database connection pool size. Default 8.
    #[arg(long, env = "MESHGATE_DB_POOL", default_value_t = 8)]
    pub db_pool_size: u32,

    /// JSON file declaring login providers (Google, Apple, GitHub, Microsoft,
    /// any OIDC issuer) and trusted issuers for token exchange. Default: none
    /// (only password and email-code login). See `login::settings`.
    #[arg(long, env = "MESHGATE_LOGIN_CONFIG")]
    pub login_config: Option<PathBuf>,

    /// The control plane's public base URL, from which OAuth callback URLs
    /// (`<url>/api/v1/auth/oauth/<provider>/callback`) are built; `https://`
    /// also marks login cookies `Secure`. Default: the issuer.
    #[arg(long, env = "MESHGATE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Seconds a browser login (`state`) may take from authorize to
    /// callback. Default 600: enough to sign in at the provider, short
    /// enough that a leaked state is soon useless.
    #[arg(long, env = "MESHGATE_OAUTH_STATE_TTL", default_value_t = 600)]
    pub oauth_state_ttl_secs: i64,

    /// Seconds an email one-time code stays valid. Default 600.
    #[arg(long, env = "MESHGATE_OTP_TTL", default_value_t = 600)]
    pub otp_ttl_secs: i64,

    /// Wrong guesses allowed per email code before it is refused. Default 5.
    #[arg(long, env = "MESHGATE_OTP_MAX_ATTEMPTS", default_value_t = 5)]
    pub otp_max_attempts: i64,

    /// Seconds before another code may be sent to the same address.
    /// Default 60.
    #[arg(long, env = "MESHGATE_OTP_RESEND", default_value_t = 60)]
    pub otp_resend_secs: i64,

    /// SMTP server for email codes, e.g. `smtps://user:pass@mail.example.com`
    /// or `smtp://relay:25` (lettre URL syntax). Default: none — messages are
    /// written as files under `MESHGATE_MAIL_DIR` (local use).
    #[arg(long, env = "MESHGATE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender of email codes. Default `meshgate <no-reply@localhost>`.
    #[arg(long, env = "MESHGATE_MAIL_FROM", default_value = "meshgate <no-reply@localhost>")]
    pub mail_from: String,

    /// Directory the file mailer writes to when no SMTP server is set.
    /// Default `<data_dir>/mail`.
    #[arg(long, env = "MESHGATE_MAIL_DIR")]
    pub mail_dir: Option<PathBuf>,
}

impl Config {
    /// The defaults, as if no flag or variable were given (tests start here).
    pub fn defaults() -> Self {
        let cli = Cli::parse_from(["meshgate", "serve"]);
        match cli.command {
            Command::Serve(config) => *config,
        }
    }

    /// Rejects settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (
                self.access_ttl_secs >= 60 && self.access_ttl_secs <= 86_400,
                "MESHGATE_ACCESS_TTL must be 60..=86400 seconds",
            ),
            (
                self.refresh_ttl_secs >= self.access_ttl_secs,
                "MESHGATE_REFRESH_TTL must be at least the access token lifetime",
            ),
            (
                self.refresh_grace_secs >= 0 && self.refresh_grace_secs <= 60,
                "MESHGATE_REFRESH_GRACE must be 0..=60 seconds",
            ),
            (
                self.login_max_failures_per_account > 0 && self.login_max_failures_per_ip > 0,
                "login failure limits must be positive",
            ),
            (self.login_lockout_secs > 0, "MESHGATE_LOGIN_LOCKOUT must be positive"),
            (self.apikey_max_days >= 1 && self.apikey_max_days <= 365, "MESHGATE_APIKEY_MAX_DAYS must be 1..=365"),
            (
                meshgate_core::apikey::is_valid_prefix(&self.apikey_prefix),
                "MESHGATE_APIKEY_PREFIX must be 2-16 characters of [a-z0-9]",
            ),
            (
                !self.issuer.is_empty() && !self.audience.is_empty(),
                "MESHGATE_ISSUER and MESHGATE_AUDIENCE must not be empty",
            ),
            (self.max_body_bytes >= 1024, "MESHGATE_MAX_BODY must be at least 1024 bytes"),
            (
                self.oauth_state_ttl_secs >= 60 && self.oauth_state_ttl_secs <= 3600,
                "MESHGATE_OAUTH_STATE_TTL must be 60..=3600 seconds",
            ),
            (self.otp_ttl_secs >= 60 && self.otp_ttl_secs <= 3600, "MESHGATE_OTP_TTL must be 60..=3600 seconds"),
            (self.otp_max_attempts >= 1 && self.otp_max_attempts <= 20, "MESHGATE_OTP_MAX_ATTEMPTS must be 1..=20"),
            (self.otp_resend_secs >= 0, "MESHGATE_OTP_RESEND must not be negative"),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err((*msg).to_string()),
            None => Ok(()),
        }
    }

    /// The public base URL without a trailing slash (the issuer when unset).
    pub fn public_base(&self) -> &str {
        self.public_url.as_deref().unwrap_or(&self.issuer).trim_end_matches('/')
    }

    /// The directory of the file mailer.
    pub fn mail_dir(&self) -> PathBuf {
        self.mail_dir.clone().unwrap_or_else(|| self.data_dir.join("mail"))
    }

    /// The effective database URL (the SQLite default when unset).
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("meshgate.db").display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Cli::parse_from(["meshgate", "serve"]);
        let Command::Serve(c) = c.command;
        assert!(c.validate().is_ok());
        assert_eq!(c.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.signing_alg, SigningAlg::EdDsa);
        assert!(c.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn flags_parse_and_bad_values_are_named() {
        let c = Cli::parse_from(["meshgate", "serve", "--signing-alg", "ES256", "--access-ttl-secs", "10"]);
        let Command::Serve(c) = c.command;
        assert_eq!(c.signing_alg, SigningAlg::Es256);
        assert!(c.validate().unwrap_err().contains("MESHGATE_ACCESS_TTL"));
    }
}
