"""Chappie flows package (see DESIGN.md)."""
