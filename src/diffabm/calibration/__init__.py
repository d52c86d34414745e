"""Gradient-based calibration of differentiable ABMs: point (c-GradABM), calib-NN (dc-GradABM),
ensembles and normalising-flow variational inference (GVI), as Lightning modules.

Import the submodules you need: `observe`, `losses`, `priors` and `estimators` are light;
`module`, `point`, `flow`, `calibnn` and `stage` import Lightning (about 10 s).
"""
