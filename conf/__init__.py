"""The Hydra configs of diffabm, shipped with the package (pkg://diffabm.conf); src/diffabm/conf links to the
project's top-level conf/."""
