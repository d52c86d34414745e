"""Figures of the studies (matplotlib, Agg backend): each reads stores only and saves a PNG, with the store's
provenance in its text chunks, and a PDF beside it; the shared parts (saving, bands, date axes, intervention
shading) are in `diffabm.figures.style`."""
