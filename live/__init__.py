"""Chappie live package (see DESIGN.md)."""
