// The peer of the OIDC benchmark (bench/bench_peer.py): oidc-provider, the
// reference Node.js OpenID Provider, configured like the portal: node cluster
// workers (PEER_WORKERS), RS256, refresh-token rotation, JWT access tokens (a
// resource indicator), every model in the benchmark's PostgreSQL database
// (the adapter below; the portal keeps refresh tokens there too).
//
//   node peer_oidc.mjs serve   listen on PEER_PORT (issuer PEER_ISSUER)
//   node peer_oidc.mjs seed N  N refresh tokens (client bench-jwt) and N
//                              opaque access tokens (bench-opaque, for
//                              userinfo): one JSON line on stdout
//
// Environment: DATABASE_URL, PEER_ISSUER, PEER_PORT, PEER_WORKERS, PEER_JWK
// (the private RSA JWK), PEER_SECRET (both clients' secret).

import cluster from 'node:cluster';
import http from 'node:http';

import pg from 'pg';
import Provider from 'oidc-provider';

const env = process.env;
const db = new pg.Pool({ connectionString: env.DATABASE_URL, max: 20 });

class PgAdapter {
  constructor(name) {
    this.name = name;
  }

  async upsert(id, payload, expiresIn) {
    await db.query(
      `INSERT INTO oidc_peer (name, id, payload, grant_id, user_code, uid, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
       ON CONFLICT (name, id) DO UPDATE SET payload = excluded.payload,
         grant_id = excluded.grant_id, user_code = excluded.user_code, uid = excluded.uid,
         expires_at = excluded.expires_at`,
      [this.name, id, payload, payload.grantId ?? null, payload.userCode ?? null,
        payload.uid ?? null, expiresIn ?? 315360000],
    );
  }

  async #findBy(column, value) {
    const { rows } = await db.query(
      `SELECT payload, consumed_at IS NOT NULL AS consumed FROM oidc_peer
       WHERE name = $1 AND ${column} = $2 AND expires_at > now()`,
      [this.name, value],
    );
    if (rows.length === 0) return undefined;
    return rows[0].consumed ? { ...rows[0].payload, consumed: true } : rows[0].payload;
  }

  find(id) { return this.#findBy('id', id); }

  findByUid(uid) { return this.#findBy('uid', uid); }

  findByUserCode(userCode) { return this.#findBy('user_code', userCode); }

  async consume(id) {
    await db.query('UPDATE oidc_peer SET consumed_at = now() WHERE name = $1 AND id = $2', [this.name, id]);
  }

  async destroy(id) {
    await db.query('DELETE FROM oidc_peer WHERE name = $1 AND id = $2', [this.name, id]);
  }

  async revokeByGrantId(grantId) {
    await db.query('DELETE FROM oidc_peer WHERE grant_id = $1', [grantId]);
  }
}

const RESOURCE = 'urn:bench:api';

function provider() {
  const client = (id) => ({
    client_id: id,
    client_secret: env.PEER_SECRET,
    grant_types: ['authorization_code', 'refresh_token'],
    redirect_uris: ['https://rp.example.com/callback'],
    token_endpoint_auth_method: 'client_secret_basic',
  });
  return new Provider(env.PEER_ISSUER, {
    adapter: PgAdapter,
    clients: [client('bench-jwt'), client('bench-opaque')],
    jwks: { keys: [JSON.parse(env.PEER_JWK)] },
    cookies: { keys: ['bench-peer-cookie-key-0123456789'] },
    scopes: ['openid', 'offline_access', 'profile', 'api:read'],
    claims: { openid: ['sub'], profile: ['nickname', 'picture'] },
    findAccount: async (ctx, sub) => ({
      accountId: sub,
      claims: async () => ({ sub, nickname: `user ${sub}`, picture: 'https://example.com/a.png' }),
    }),
    rotateRefreshToken: true,
    ttl: { AccessToken: 600, IdToken: 3600, RefreshToken: 2592000, Grant: 2592000 },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, c) => (c.clientId === 'bench-jwt' ? RESOURCE : undefined),
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'api:read',
          audience: RESOURCE,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
  });
}

async function seed(n) {
  await db.query(`CREATE TABLE IF NOT EXISTS oidc_peer (
    name text NOT NULL, id text NOT NULL, payload jsonb NOT NULL, grant_id text, user_code text,
    uid text, expires_at timestamptz NOT NULL, consumed_at timestamptz, PRIMARY KEY (name, id))`);
  await db.query('CREATE INDEX IF NOT EXISTS oidc_peer_grant_idx ON oidc_peer (grant_id)');
  const p = provider();
  const jwtClient = await p.Client.find('bench-jwt');
  const opaqueClient = await p.Client.find('bench-opaque');
  const now = Math.floor(Date.now() / 1000);
  const refresh = [];
  const access = [];
  for (let k = 0; k < n; k += 1) {
    const accountId = `peer${k}`;
    const grant = new p.Grant({ accountId, clientId: 'bench-jwt' });
    grant.addOIDCScope('openid offline_access');
    grant.addResourceScope(RESOURCE, 'api:read');
    const grantId = await grant.save();
    const rt = new p.RefreshToken({
      accountId, client: jwtClient, grantId, scope: 'openid offline_access api:read',
      resource: RESOURCE, gty: 'authorization_code', authTime: now, iiat: now,
      expiresWithSession: false, rotations: 0,
    });
    refresh.push(await rt.save());
    const grant2 = new p.Grant({ accountId, clientId: 'bench-opaque' });
    grant2.addOIDCScope('openid profile');
    const grant2Id = await grant2.save();
    const at = new p.AccessToken({
      accountId, client: opaqueClient, grantId: grant2Id, scope: 'openid profile',
      gty: 'authorization_code',
    });
    access.push(await at.save());
  }
  process.stdout.write(`${JSON.stringify({ refresh, access })}\n`);
  await db.end();
}

const [mode, count] = process.argv.slice(2);
if (mode === 'seed') {
  await seed(Number(count));
} else if (cluster.isPrimary) {
  for (let i = 0; i < Number(env.PEER_WORKERS || 2); i += 1) cluster.fork();
  cluster.on('exit', (worker, code) => {
    console.error(`peer worker ${worker.process.pid} exited (${code})`);
    process.exit(1);
  });
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
    process.exit(0);
  });
} else {
  const p = provider();
  p.on('server_error', (ctx, err) => console.error('server_error', err));
  http.createServer(p.callback()).listen(Number(env.PEER_PORT), '127.0.0.1');
}
