-- Login flows (OAuth/OIDC, email one-time codes, token exchange).

-- The exact URLs an app's browser logins may return to (no prefix or
-- wildcard matching: `return_to` must equal one of these byte for byte).
CREATE TABLE app_return_urls (
    app_id     TEXT NOT NULL REFERENCES apps (id),
    url        TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, url)
);

-- External identities linked to users: (provider, subject) is the
-- provider's stable id for the person (OIDC `sub`, GitHub user id, the `sub`
-- of an exchanged token). `provider` is the configured provider id, or
-- `exchange:<issuer id>`.
CREATE TABLE identities (
    provider      TEXT NOT NULL,
    subject       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id),
    email         TEXT,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX identities_user ON identities (user_id);

-- Pending browser logins. Keyed by the SHA-256 of the one-time `state`;
-- `binding_hash` is the SHA-256 of the cookie set on the browser that
-- started the flow. The PKCE verifier and the nonce are derived from the
-- state with a key only the control plane holds, so no secret is stored.
CREATE TABLE oauth_states (
    state_hash   TEXT PRIMARY KEY,
    binding_hash TEXT NOT NULL,
    provider     TEXT NOT NULL,
    app_id       TEXT NOT NULL REFERENCES apps (id),
    return_to    TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX oauth_states_expires ON oauth_states (expires_at);

-- Email one-time codes: at most one live code per address, stored as a
-- keyed hash, with its failed attempts and when it was last sent.
CREATE TABLE email_otps (
    email      TEXT PRIMARY KEY,
    code_hash  TEXT NOT NULL,
    app_id     TEXT NOT NULL REFERENCES apps (id),
    attempts   BIGINT NOT NULL,
    sent_at    BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX email_otps_expires ON email_otps (expires_at);
