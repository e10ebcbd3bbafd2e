"""Sweeps: the grid of cells, presets, planning, the engine that computes runs, short
training, the store of results, its schema and check, and the executors that run chunks."""
