"""Analyses: pure functions over arrays and modules, no database (``svd``, ``tuning``,
``examples``, ``stimuli``, ``planted`` ground truth, ``motifs/`` detectors, ``featurevis/``,
``toy_superposition``, BatchNorm ``folding``, scoped ``hooks``). Jobs in
:mod:`circuitatlas.jobs` feed them from the graph and write their results back."""
