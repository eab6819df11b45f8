"""Tuning models arrive with tuning policies."""
