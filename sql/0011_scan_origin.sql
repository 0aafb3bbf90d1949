-- Scan login that resists phishing (issue 20).
--
-- How the QR code reached the mini program (WeChat's launch scene, sent with the
-- scan) and what the portal made of it, kept with each login attempt:
--   scene        the launch scene (1011 camera, 1012 long-press in an image, 1013
--                album, 1047/1048/1049 the same for mini-program codes, 1065/1194/
--                1286 a URL Scheme or URL Link); NULL when the mini program sent none
--   scan_source  'ok' (as expected for where the login started), 'warned' (a
--                computer's QR opened from an image or the album: the person was
--                warned), 'refused' (the same, refused by the pool), 'unknown'
--   flagged      the attempt looks like phishing: "this wasn't me", or a wrong
--                number picked in number matching
--   started_from what the confirm screen showed of where the login was started
--                ("Chrome on Windows · 广东 深圳 · shop.example.com")
ALTER TABLE login_events
    ADD COLUMN scene integer,
    ADD COLUMN scan_source text
        CHECK (scan_source IN ('ok', 'warned', 'refused', 'unknown')),
    ADD COLUMN flagged boolean NOT NULL DEFAULT false,
    ADD COLUMN started_from text;
CREATE INDEX login_events_flagged_idx ON login_events (pool_id, created_at DESC) WHERE flagged;

-- The pool's choices:
--   scan_source_policy  'warn' (the default) or 'refuse' a computer's QR code opened
--                       by long-press or from the album (a forwarded screenshot)
--   number_match        after the scan, the computer shows a two-digit number and
--                       the person picks it among three on the phone (off by default)
ALTER TABLE pools
    ADD COLUMN scan_source_policy text NOT NULL DEFAULT 'warn'
        CHECK (scan_source_policy IN ('warn', 'refuse')),
    ADD COLUMN number_match boolean NOT NULL DEFAULT false;
