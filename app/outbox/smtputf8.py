"""Whether this service's SMTP server offers SMTPUTF8, so the API can refuse addresses it could
never deliver to (a non-ASCII local part) instead of accepting them and failing for 24 hours.

Probed at start with a short timeout and remembered. While the answer is unknown (no server, or
it did not answer) it is asked again lazily, at most once every ``RETRY_SECONDS``; concurrent
callers share one probe. Unknown counts as "no".
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time

from app.outbox.mail import PROBE_TIMEOUT, SmtpTarget, offers_smtputf8

log = logging.getLogger("anonid.mail")


class Smtputf8Support:
    """The remembered answer of one SMTP server (``None`` in ``offered`` while unknown)."""

    RETRY_SECONDS = 60.0

    def __init__(
        self,
        smtp_url: str | None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.target = SmtpTarget.parse(smtp_url) if smtp_url else None
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.offered: bool | None = None
        self._asked_at = -math.inf
        self._probe: asyncio.Task[bool | None] | None = None

    def start(self) -> None:
        """Ask the server now, in the background (``offers`` waits for this answer)."""
        if self.target is not None:
            self._asked_at = time.monotonic()
            self._probe = asyncio.create_task(self._ask(), name="anonid-smtputf8-probe")

    async def offers(self) -> bool:
        """Whether mail to a non-ASCII local part can go out: the remembered answer, asked again
        (and waited for, up to the probe's timeout) when unknown and last asked a while ago."""
        if self.offered is not None or self.target is None:
            return bool(self.offered)
        if self._probe is None or self._probe.done():
            if time.monotonic() - self._asked_at < self.RETRY_SECONDS:
                return False
            self.start()
        assert self._probe is not None
        # Shielded: a cancelled request must not cancel the probe other callers wait for.
        return bool(await asyncio.shield(self._probe))

    async def close(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)

    async def _ask(self) -> bool | None:
        assert self.target is not None
        try:
            self.offered = await offers_smtputf8(
                self.target, ssl_context=self.ssl_context, within=self.timeout
            )
        except Exception as exc:  # down, slow or refusing: unknown, asked again later
            log.warning(
                "could not ask %s whether it offers SMTPUTF8: %s",
                self.target.describe(),
                type(exc).__name__,
            )
        else:
            log.info("%s offers SMTPUTF8: %s", self.target.describe(), self.offered)
        return self.offered
