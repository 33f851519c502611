"""The review report: one self-contained HTML page of the results table (figures, charts,
galleries with thumbnails, failed rows by reason), built by `backfill-quality report`.

The only importer of jinja2. Aggregates come from db/report.py, failures from the checkpoints,
thumbnails through the fetcher and scoring/thumbnail.py.
"""
