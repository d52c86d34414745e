"""Synthetic populations: the census-based synthesiser and a seeded toy generator."""

from diffabm.population.schema import Population, read_population

__all__ = ["Population", "read_population"]
