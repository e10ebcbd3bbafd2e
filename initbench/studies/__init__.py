"""Studies of the user's own model: its per-module probe, the coordinate check over widths,
and the order-to-chaos phase diagram."""
