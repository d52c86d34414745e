"""Study-specific stages that sit above calibration and may name a concrete model (e.g. the Brock & Hommes
gradient-horizon experiment)."""
