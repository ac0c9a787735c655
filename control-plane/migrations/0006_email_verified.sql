-- Account pre-hijacking: a user could set their own email to someone else's
-- address, and that person's later Google/GitHub/email-code login linked to
-- the squatter's account (the squatter keeps the password). An external
-- identity now links by email only to an address that is *verified*: set by
-- an admin, or proven by a provider or an email code. A self-set address is
-- unverified until proven, and a proven login elsewhere takes it away.
ALTER TABLE users ADD COLUMN email_verified BIGINT NOT NULL DEFAULT 0; -- 0 or 1, like users.disabled
-- Existing addresses: verified when an identity of the user proved the same
-- address, or when the user never changed their own record (then an admin
-- set it: users are created by admins only).
UPDATE users SET email_verified = 1
WHERE email IS NOT NULL
  AND (EXISTS (SELECT 1 FROM identities i WHERE i.user_id = users.id AND i.email = users.email)
       OR NOT EXISTS (SELECT 1 FROM audit_log a
                      WHERE a.action = 'user.update' AND a.actor = users.id AND a.target = users.id));
