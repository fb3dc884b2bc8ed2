"""anonid: a self-hosted identity store for anonymous accounts that become registered ones."""

__version__ = "0.1.0"
