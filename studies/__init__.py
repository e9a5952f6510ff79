"""Exploratory studies behind docs/modality_aware.md and docs/model_recipe.md.

Not product code: not an installed package and not in the image. Studies use the product through its
public parts (strategy specs, ``benchmark.protocol.run_cell``, the benchmark's results) and register
nothing in it; their exploratory strategy variants live in :mod:`studies.variants`.
"""
