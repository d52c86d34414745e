# Shared helpers: every script composes the study config from the {study} wildcard.
wildcard_constraints:
    study="[A-Za-z0-9_-]+",
