"""backfill-quality: score every unscored image in a PostgreSQL table for annotation quality."""

__version__ = "0.1.0"
