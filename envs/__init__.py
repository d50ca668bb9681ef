"""Chappie envs package (see DESIGN.md)."""
