"""The bottom layer: activations, schemes, weight targets and their fills, mean-field
theory, datasets, devices and random-number streams, intervals, errors and results folders.
Imports nothing else from initbench."""
