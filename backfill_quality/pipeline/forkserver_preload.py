"""Imported by the forkserver of the scoring processes when it starts (a preload module): the
forkserver dies with the main process that started it (see `lifeline.py`)."""

from backfill_quality.pipeline.lifeline import die_with_starter

die_with_starter()
