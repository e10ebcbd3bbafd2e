"""What is measured on a network at initialization: per-layer statistics, histograms, the
input-output Jacobian, and the forward hooks that record any module's outputs."""
