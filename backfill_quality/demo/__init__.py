"""The embedded demo: a local image server, generated bird pictures, an embedded PostgreSQL."""
