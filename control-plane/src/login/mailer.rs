//! Outgoing mail for email codes: SMTP when `MESHGATE_SMTP_URL` is set,
//! otherwise one file per message under `MESHGATE_MAIL_DIR` (mode 0600) for
//! local use and tests. Codes never go to the log: the file mailer logs only
//! the path it wrote.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::Config;
use crate::crypto;
use crate::error::{ApiError, ApiResult};

/// How long an SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where messages go.
pub enum Mailer {
    /// An SMTP server.
    Smtp {
        /// The transport (holds the credentials from the URL).
        transport: AsyncSmtpTransport<Tokio1Executor>,
        /// Sender.
        from: Mailbox,
    },
    /// Files in a directory.
    Files {
        /// The directory.
        dir: PathBuf,
        /// Sender.
        from: Mailbox,
    },
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp { from, .. } => write!(f, "Mailer::Smtp(from {from}, <server redacted>)"),
            Self::Files { dir, from } => write!(f, "Mailer::Files({}, from {from})", dir.display()),
        }
    }
}

impl Mailer {
    /// SMTP from `MESHGATE_SMTP_URL`, else the file mailer.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let from: Mailbox =
            config.mail_from.parse().map_err(|e| anyhow::anyhow!("MESHGATE_MAIL_FROM is not an address: {e}"))?;
        Ok(match &config.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|_| anyhow::anyhow!("MESHGATE_SMTP_URL is not a valid smtp:// or smtps:// URL"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Self::Smtp { transport, from }
            }
            None => Self::Files { dir: config.mail_dir(), from },
        })
    }

    /// Sends a plain-text message.
    pub async fn send(&self, to: &str, subject: &str, body: String) -> ApiResult<()> {
        let to: Mailbox = to.parse().map_err(|_| ApiError::invalid("email is not a valid address"))?;
        let from = match self {
            Self::Smtp { from, .. } | Self::Files { from, .. } => from.clone(),
        };
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| ApiError::Internal(format!("mail: {e}")))?;
        match self {
            Self::Smtp { transport, .. } => {
                transport.send(message).await.map_err(|e| ApiError::ProviderUnavailable(format!("smtp: {e}")))?;
            }
            Self::Files { dir, .. } => {
                let path = dir.join(format!("{}-{}.eml", stamp(), crypto::hex(&crypto::random_bytes::<4>())));
                let bytes = message.formatted();
                let dir = dir.clone();
                let written = path.clone();
                tokio::task::spawn_blocking(move || write_private(&dir, &written, &bytes))
                    .await?
                    .map_err(|e| ApiError::Internal(format!("mail file {}: {e}", path.display())))?;
                tracing::info!(path = %path.display(), "email written to file (no SMTP server configured)");
            }
        }
        Ok(())
    }
}

/// Nanoseconds since the epoch: file names sort by time.
fn stamp() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn write_private(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}
