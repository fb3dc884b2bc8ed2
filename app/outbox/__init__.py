"""The outbox: emails and webhooks written in the same transaction as the change that causes them,
delivered later by a worker that retries with backoff, so an outage loses nothing."""
