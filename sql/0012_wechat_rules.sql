-- Issue 17: WeChat as it really is.
--
-- Link rules ("scan a normal link QR code to open the mini program"): a pool on
-- the platform's default mini program puts {PORTAL_QR_BASE}/q/{ticket} in its QR
-- codes (one rule for every such pool); a pool with a private mini program uses a
-- prefix of its own: its pool host's /q/, or this custom one. A prefix belongs to
-- one mini program only, so no two pools may claim the same one.
ALTER TABLE pools ADD COLUMN mp_qr_prefix text
    CHECK (mp_qr_prefix ~ '^https://[a-z0-9.-]+(:[0-9]{1,5})?/q/$');
CREATE UNIQUE INDEX pools_mp_qr_prefix_idx ON pools (mp_qr_prefix);

-- The verification file WeChat hands out for a mini program's link rules (name and
-- content), served under the rule's last path segment and at the host root. One per
-- mini program: the default one's is set by the platform admin, a private one's by
-- the pool's admin.
CREATE TABLE mp_verify_files (
    appid       text PRIMARY KEY,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9_-]{1,64}\.txt$'),
    content     text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 1024),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Phone-number calls per pool and day (getPhoneNumber is paid and quota-limited):
-- 'ok' a number WeChat gave (a paid call), 'refused' a code WeChat refused,
-- 'quota' a button that answered errno 1400001 (the mini program's quota is spent).
CREATE TABLE phone_calls (
    pool_id     bigint NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    day         date NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'refused', 'quota')),
    calls       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (pool_id, day, outcome)
);

-- Content security for avatars (mediaCheckAsync): an uploaded avatar is 'pending'
-- until WeChat's asynchronous result says 'pass'; a 'risky' one is removed from the
-- users who chose it. Avatars stored before this migration count as passed.
ALTER TABLE avatars ADD COLUMN status text NOT NULL DEFAULT 'pass'
    CHECK (status IN ('pending', 'pass', 'risky'));
CREATE TABLE avatar_checks (
    trace_id    text PRIMARY KEY,
    appid       text NOT NULL,
    sha256      text NOT NULL REFERENCES avatars (sha256) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX avatar_checks_sha_idx ON avatar_checks (sha256);
