-- Credits: balances per account and the ledger of every change to them.
-- Portable SQL (SQLite and PostgreSQL through sqlx's Any driver).
--
-- An account is (kind, subject): kind 'user', 'app', 'key' (credits of one
-- API key) or 'uses' (remaining uses of a key created with max_uses). Rows
-- are stamped with the change version of their last write, so the sync feed
-- ships "what changed since N" as `version > N`, like keys and revocations.
CREATE TABLE credit_accounts (
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    balance    BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, subject)
);
CREATE INDEX credit_accounts_version ON credit_accounts (version);

-- Every grant, deduction and reported usage, once: `id` is the caller's
-- idempotency key ('grant:<request id>', 'deduct:<request id>',
-- 'usage:<report id>:<kind>:<subject>'), so a retry cannot apply twice.
CREATE TABLE credit_ledger (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    amount        BIGINT NOT NULL, -- positive: credits added; negative: used
    reason        TEXT NOT NULL,   -- grant | deduct | usage
    report_id     TEXT,
    actor         TEXT,
    balance_after BIGINT NOT NULL,
    version       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX credit_ledger_account ON credit_ledger (kind, subject, version);
CREATE INDEX credit_ledger_version ON credit_ledger (version);

-- Usage reports from filters, by id: a retried report is answered with the
-- version it was applied at, and applied only once.
CREATE TABLE credit_reports (
    id         TEXT PRIMARY KEY,
    version    BIGINT NOT NULL,
    items      BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
