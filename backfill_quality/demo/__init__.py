"""The embedded demo: an embedded PostgreSQL, a local image server, real and generated pictures."""
