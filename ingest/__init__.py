"""Chappie ingest package (see DESIGN.md)."""
