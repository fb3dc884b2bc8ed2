"""Ways to prove who you are, one module each: each issues and verifies, none commits."""
