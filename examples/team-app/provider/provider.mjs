// The team's OpenID provider for development: node-oidc-provider with the BFF as its one client.
// Run: npm install && PORT=9400 BFF_URL=http://127.0.0.1:8000 CLIENT_SECRET=... API=https://orders.example/ node provider.mjs
// Log in as alice (an admin) or bob, with any password (development interactions: never in production).
import Provider from 'oidc-provider';

const port = Number(process.env.PORT ?? 9400);
const bff = process.env.BFF_URL ?? 'http://127.0.0.1:8000';
const secret = process.env.CLIENT_SECRET;
const api = process.env.API ?? 'https://orders.example/';
if (!secret) throw new Error('CLIENT_SECRET is required (the same as the BFF\'s BFF_CLIENT_SECRET)');
const issuer = `http://127.0.0.1:${port}`;

const USERS = {
  alice: { name: 'Alice Adams', email: 'alice@example.com', email_verified: true, groups: ['staff', 'admin'] },
  bob: { name: 'Bob Brown', email: 'bob@example.com', email_verified: true, groups: ['staff'] },
};

const provider = new Provider(issuer, {
  // The checklist of docs/guides/your-provider.md: a confidential client, code + PKCE (node-oidc-provider requires
  // PKCE), refresh tokens, the redirect, post-logout and back-channel logout URIs.
  clients: [{
    client_id: 'bff',
    client_secret: secret,
    redirect_uris: [`${bff}/bff/callback`],
    post_logout_redirect_uris: [`${bff}/`],
    backchannel_logout_uri: `${bff}/bff/backchannel`,
    backchannel_logout_session_required: true,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'orders:read'],
  cookies: { keys: [process.env.COOKIE_KEY ?? 'change-me-development-cookie-key'] },
  ttl: { AccessToken: 300, IdToken: 300, RefreshToken: 86400, Session: 86400, Grant: 86400, Interaction: 600 },
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    // The API's tokens are JWTs (RFC 9068) with aud = api, asked for by the BFF with resource=api (RFC 8707).
    resourceIndicators: {
      enabled: true,
      defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return ['authorization', 'pushed_authorization_request'].includes(ctx.oidc.route) ? api : undefined;
      },
      getResourceServerInfo(ctx, resource) {
        if (resource !== api) throw new Provider.errors.InvalidTarget();
        return { scope: 'orders:read', audience: api, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  // The BFF runs on loopback in development; node-oidc-provider's SSRF guard would refuse the back-channel logout.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, preferred_username: id, ...(USERS[id] ?? {}) }; } };
  },
  // The BFF keeps the session alive with refresh tokens (without offline_access: they end with the provider session).
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  // The BFF is first-party: grant what it asks for without a consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email groups orders:read'); // orders:read is asked for as a scope too
    grant.addResourceScope(api, 'orders:read');
    await grant.save();
    return grant;
  },
});
provider.listen(port, '127.0.0.1', () => console.log(`provider listening on ${issuer}`));
