"""`kd sweep`: a grid of runs (kd.sweep.grid), run (kd.sweep.runner) and reported (kd.sweep.report)."""
