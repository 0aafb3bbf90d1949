-- A private mini program belongs to exactly one pool (issue 16, finding 1).
--
-- Two pools could name the same AppID: the AppSecret used for it was that of
-- the pool with the lowest id, and WeChat's access token is cached per AppID,
-- so one tenant could break, or borrow, another tenant's mini program. From
-- now on the database refuses a second pool with the same AppID, whatever the
-- timing of the two writes (the application saves an AppID only after WeChat
-- accepted its AppSecret, and the platform's default AppID never; see
-- portal/tenants/pools.py).
--
-- An AppID that several pools share today is contested: which pool is its
-- owner cannot be told from here, so every one of them goes back to the
-- platform's default mini program; its owner saves it again in the console
-- (which proves the AppSecret with WeChat).
UPDATE pools SET mp_appid = NULL, mp_secret_enc = NULL, updated_at = now()
 WHERE mp_appid IN (
     SELECT mp_appid FROM pools WHERE mp_appid IS NOT NULL GROUP BY mp_appid HAVING count(*) > 1
 );

ALTER TABLE pools ADD CONSTRAINT pools_mp_appid_key UNIQUE (mp_appid);
