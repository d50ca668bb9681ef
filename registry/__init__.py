"""Chappie registry package (see DESIGN.md)."""
