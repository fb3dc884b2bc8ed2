"""Sessions (CONTRACT §4): a short access token anyone can verify offline, and a single-use
refresh token only anonid can redeem, bound to one row of ``sessions``.

- ``keys``: the ES256 signing keys and the JWKS;
- ``access``: issuing and verifying access tokens;
- ``refresh``: refresh tokens, their rotation, the reuse interval and reuse detection;
- ``store``: ``start`` (every way of signing in ends in it), liveness, listing and ending sessions;
- ``cookies``: the two cookies; ``useragent``: the short summary a session list shows.

Import the modules themselves: this package re-exports nothing, so ``app.lifecycle`` can use the
liveness rule (``app.sessions.alive``) without importing the rest.
"""
