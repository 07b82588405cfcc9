// node-oidc-provider, a second configuration (DESIGN §11): users with name, email and groups claims, and JWT access
// tokens (RFC 9068) for one API by resource indicators (RFC 8707). Beside provider.mjs (the logout interop), for
// tests/interop/test_node_claims.py and examples/.
// Usage: node claims.mjs PORT BFF_PUBLIC_URL[,BFF_PUBLIC_URL...] CLIENT_SECRET API_RESOURCE
// Development interactions: log in as any of USERS (any password); the grant is given without a consent page.
import Provider from 'oidc-provider';

const [port, bffs, secret, api] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const bffUrls = bffs.split(',');

// The directory: what findAccount answers for each user. Anyone else logs in with a username alone.
export const USERS = {
  alice: { name: 'Alice Adams', email: 'alice@example.com', email_verified: true, groups: ['staff', 'admin'] },
  bob: { name: 'Bob Brown', email: 'bob@example.com', email_verified: false, groups: ['staff'] },
};

const configuration = {
  clients: [
    {
      client_id: 'bff',
      client_secret: secret,
      redirect_uris: bffUrls.map((bff) => `${bff}/bff/callback`),
      post_logout_redirect_uris: bffUrls.map((bff) => `${bff}/`),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // Scope -> the claims it releases. node-oidc-provider conforms the ID token to the spec when an access token is
  // issued too (conformIdTokenClaims): these claims come from userinfo, which the BFF asks for what it lacks.
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'api:read'],
  cookies: { keys: ['interop-claims-cookie-key-0123456789'] },
  ttl: { AccessToken: 120, IdToken: 300, RefreshToken: 3600, Session: 3600, Grant: 3600, Interaction: 600 },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    // RFC 8707: a token for `api` is a JWT (RFC 9068, typ at+jwt) with aud = api; the login's own token stays
    // opaque and good at userinfo.
    resourceIndicators: {
      enabled: true,
      // At the authorization request (and its PAR push) the login is granted the API, so the BFF's refresh-token
      // grant with resource=api gets a token for it; at the token endpoint no resource is implied.
      defaultResource(ctx, client, oneOf) {
        if (oneOf) return oneOf;
        return ['authorization', 'pushed_authorization_request'].includes(ctx.oidc.route) ? api : undefined;
      },
      getResourceServerInfo(ctx, resourceIndicator) {
        if (resourceIndicator !== api) throw new Provider.errors.InvalidTarget();
        return { scope: 'api:read', audience: api, accessTokenTTL: 120, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
      useGrantedResource() {
        return false;
      },
    },
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...(USERS[id] ?? {}) };
      },
    };
  },
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile email groups offline_access api:read');
    grant.addResourceScope(api, 'api:read');
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);
provider.listen(Number(port), '127.0.0.1', () => console.log(`node-oidc-provider (claims) listening on ${issuer}`));
