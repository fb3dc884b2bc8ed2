"""HTTP layer: thin routes that parse, authenticate, call the domain and map errors."""
