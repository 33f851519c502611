"""Bytes -> score, pure: decode, subject detection, the five checks, annotation."""
