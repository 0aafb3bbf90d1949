-- What the PC page learns about the WeChat user when they have scanned but not yet
-- confirmed (issue 16, finding 10): whoever holds a ticket (its creator, or the
-- site that embeds the QR) reads its status, and a returning user who only scans,
-- then declines, must not have given away who they are.
--   'none'    nothing until the login is confirmed (the default);
--   'avatar'  the returning user's avatar only;
--   'profile' the returning user's nickname and avatar (the behaviour before 0006).
-- Once confirmed, the status carries the nickname and avatar whatever the setting.
ALTER TABLE pools
    ADD COLUMN scan_reveal text NOT NULL DEFAULT 'none'
        CHECK (scan_reveal IN ('none', 'avatar', 'profile'));
