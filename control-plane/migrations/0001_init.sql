-- meshgate control plane schema. Portable SQL: the same file runs on SQLite
-- and PostgreSQL through sqlx's Any driver. Times are unix seconds (BIGINT),
-- ids are application-generated TEXT, so no dialect-specific autoincrement.

-- Monotonic counters. 'change' feeds the `version` column of every table the
-- sync feed ships (signing keys, API keys, revocations); 'audit' numbers the
-- audit log. A counter is bumped with UPDATE ... RETURNING inside the writing
-- transaction, so its row lock orders versions in commit order.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('change', 0);
INSERT INTO counters (name, value) VALUES ('audit', 0);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT UNIQUE,
    display_name  TEXT,
    password_hash TEXT NOT NULL,
    disabled      BIGINT NOT NULL DEFAULT 0, -- 0 or 1 (BOOLEAN does not map through Any on SQLite)
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE apps (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES apps (id),
    name        TEXT NOT NULL,
    description TEXT,
    scopes      TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    UNIQUE (app_id, name)
);

CREATE TABLE role_assignments (
    user_id    TEXT NOT NULL REFERENCES users (id),
    role_id    TEXT NOT NULL REFERENCES roles (id),
    app_id     TEXT NOT NULL REFERENCES apps (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX role_assignments_user_app ON role_assignments (user_id, app_id);

-- A session is one login; its refresh tokens form one rotation family.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id),
    app_id     TEXT NOT NULL REFERENCES apps (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    id           TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES sessions (id),
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT,
    successor_id TEXT,
    revoked_at   BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY,
    alg           TEXT NOT NULL,
    status        TEXT NOT NULL,
    private_enc   TEXT NOT NULL,
    public_jwk    TEXT,
    created_at    BIGINT NOT NULL,
    activated_at  BIGINT,
    retire_after  BIGINT,
    version       BIGINT NOT NULL
);
CREATE INDEX signing_keys_version ON signing_keys (version);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    prefix       TEXT NOT NULL,
    digest       TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    owner_id     TEXT NOT NULL REFERENCES users (id),
    app_id       TEXT REFERENCES apps (id),
    scopes       TEXT NOT NULL,
    rate_limit   BIGINT,
    expires_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    version      BIGINT NOT NULL
);
CREATE INDEX api_keys_owner ON api_keys (owner_id);
CREATE INDEX api_keys_version ON api_keys (version);

-- kind: 'jti' | 'sid' | 'sub' | 'key'. For 'sub', not_before is the
-- subject-not-before time (tokens issued earlier are revoked). `until` is when
-- the entry stops mattering: the longest lifetime of what it revokes.
CREATE TABLE revocations (
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    not_before BIGINT,
    until      BIGINT NOT NULL,
    reason     TEXT,
    created_at BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX revocations_version ON revocations (version);
CREATE INDEX revocations_until ON revocations (until);

CREATE TABLE audit_log (
    id        BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT,
    action    TEXT NOT NULL,
    target    TEXT,
    source_ip TEXT,
    outcome   TEXT NOT NULL,
    detail    TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_action ON audit_log (action);
