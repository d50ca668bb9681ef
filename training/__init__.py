"""Chappie training package (see DESIGN.md)."""
