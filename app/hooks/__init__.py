"""The application's say in anonid's decisions: synchronous hooks, and the proof-of-work challenge
before a guest is made (CONTRACT §16)."""
