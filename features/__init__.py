"""Chappie features package (see DESIGN.md)."""
