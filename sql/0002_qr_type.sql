-- The kind of QR code a pool's login pages show (issue 9):
--   'link'    a plain QR of {pool url}/q/{ticket}, opened in the mini program by the
--             "scan a normal link QR code to open the mini program" rule (the default);
--   'wxacode' a mini-program code from WeChat (wxacode.getUnlimited, scene = ticket), for
--             mini programs that cannot use link-QR rules (personal accounts).
-- qr_fallback: when WeChat cannot make a mini-program code (quota, unpublished page,
-- outage), show the link QR instead of an error.
ALTER TABLE pools
    ADD COLUMN qr_type text NOT NULL DEFAULT 'link' CHECK (qr_type IN ('link', 'wxacode')),
    ADD COLUMN qr_fallback boolean NOT NULL DEFAULT true;
