"""Figures of the studies (matplotlib, Agg backend)."""
