// node-oidc-provider (certified for Back-Channel Logout and RP-Initiated Logout), configured with the BFF as its one
// client, for tests/interop. Usage: node provider.mjs PORT BFF_PUBLIC_URL CLIENT_SECRET
// Development interactions: any login and password sign in; the first-party grant is given without a consent page.
import Provider from 'oidc-provider';

const [port, bff, secret] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const configuration = {
  clients: [
    {
      client_id: 'bff',
      client_secret: secret,
      redirect_uris: [`${bff}/bff/callback`],
      post_logout_redirect_uris: [`${bff}/`],
      backchannel_logout_uri: `${bff}/bff/backchannel`,
      backchannel_logout_session_required: true,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  claims: { openid: ['sub'], profile: ['preferred_username'] },
  // DESIGN §14: the BFF's step-up asks for acr "mfa" (acr_values, and an essential acr in the claims parameter).
  acrValues: ['pwd', 'mfa'],
  cookies: { keys: ['interop-test-cookie-key-0123456789'] },
  // Short access tokens, so a test sees the BFF refresh them (rotating refresh tokens, as node-oidc-provider may).
  ttl: { AccessToken: 2, IdToken: 300, RefreshToken: 3600, Session: 3600, Grant: 3600, Interaction: 600 },
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    claimsParameter: { enabled: true },
  },
  // Its SSRF guard refuses outgoing requests to loopback addresses; the BFF runs on 127.0.0.1 in the tests, so the
  // back-channel logout request goes out without that guard (test setup only).
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, preferred_username: id }; } };
  },
  // A refresh token for the BFF's online session (bound to the provider session: it ends with it).
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  // The BFF is first-party: grant what it asks without a consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile');
    await grant.save();
    return grant;
  },
};

const provider = new Provider(issuer, configuration);

// This test provider has no real second factor: its development login form stands in for one. A login asked for
// acr "mfa" (acr_values or an essential acr claim) is recorded as acr "mfa", amr pwd+otp; any other as acr "pwd".
const finished = provider.interactionFinished.bind(provider);
provider.interactionFinished = async (req, res, result, options) => {
  if (result.login) {
    const { params } = await provider.interactionDetails(req, res);
    const essential = params.claims ? JSON.parse(params.claims).id_token?.acr?.values ?? [] : [];
    const asked = [...String(params.acr_values ?? '').split(' '), ...essential];
    const mfa = asked.includes('mfa');
    result.login = { ...result.login, acr: mfa ? 'mfa' : 'pwd', amr: mfa ? ['pwd', 'otp'] : ['pwd'] };
    console.log(`login of ${result.login.accountId} at acr ${result.login.acr} (asked: ${asked.filter(Boolean).join(' ') || '-'})`);
  }
  return finished(req, res, result, options);
};
provider.on('backchannel.error', (ctx, error, client) => console.error(`back-channel logout to ${client.clientId}: ${error} ${error.cause ?? ""}`));
provider.on('backchannel.success', (ctx, client) => console.log(`back-channel logout sent to ${client.clientId}`));
provider.listen(Number(port), '127.0.0.1', () => console.log(`node-oidc-provider listening on ${issuer}`));
