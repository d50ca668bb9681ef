"""Chappie expectations package (see DESIGN.md)."""
