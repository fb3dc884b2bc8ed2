"""What any service needs, whatever it does: the database and its pools, logs, metrics,
observability, the request middleware, rate limits, the local mail catcher and ids."""
