"""Storage every layer shares: atomic writes and content-keyed caches."""
