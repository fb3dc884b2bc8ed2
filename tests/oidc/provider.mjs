// A real OpenID Provider for the tests: oidc-provider (OpenID Certified), configured by a JSON
// file the test writes: `node provider.mjs config.json`. Its own development login and consent
// pages are the ones a person fills in; the accounts are the test's. It listens on loopback only
// and prints "ready <issuer>" once it answers.
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const accounts = config.accounts || {};
let jwksFetches = 0;

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: [config.cookie_key] },
  pkce: { methods: ["S256"], required: () => true },
  scopes: ["openid", "email", "profile"],
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
  // Put the asked-for claims in the ID token (as Google does), not only behind userinfo.
  conformIdTokenClaims: false,
  ttl: { IdToken: config.id_token_ttl || 3600, Interaction: 600, Session: 600, Grant: 600 },
  features: { devInteractions: { enabled: true } },
  // An account for any login: "v-…" has a verified address ("v-…@example.com"), "u-…" an
  // unverified one, others none; `accounts` in the config may name more.
  async findAccount(ctx, id) {
    let known = accounts[id] || {};
    if (!accounts[id] && /^[uv]-/.test(id)) {
      known = { email: `${id}@example.com`, email_verified: id.startsWith("v-") };
    }
    return {
      accountId: id,
      async claims() {
        const claims = { sub: id };
        if (known.email) {
          claims.email = known.email;
          claims.email_verified = Boolean(known.email_verified);
        }
        if (known.name) claims.name = known.name;
        return claims;
      },
    };
  },
});
provider.proxy = false;

// What the tests ask the provider itself: how often its key set was fetched.
provider.use(async (ctx, next) => {
  if (ctx.path === "/__test/stats") {
    ctx.body = { jwks_fetches: jwksFetches };
    return;
  }
  if (ctx.path === "/jwks") jwksFetches += 1;
  await next();
});

provider.listen(config.port, config.host, () => {
  console.log(`ready ${config.issuer}`);
});
