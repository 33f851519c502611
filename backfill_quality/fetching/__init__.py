"""URL -> bytes: URL safety, timeouts, byte cap, retries, rate limit, the HTTP transport."""
