-- Avatars chosen in the mini program (wx chooseAvatar gives the phone a local
-- file, which it uploads): re-encoded by the portal, stored once per content,
-- served at /avatars/{sha256}.png.
CREATE TABLE avatars (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    png         bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
