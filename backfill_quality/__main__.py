"""`python -m backfill_quality` runs the command line."""

from backfill_quality.cli import main

if __name__ == "__main__":
    main()
