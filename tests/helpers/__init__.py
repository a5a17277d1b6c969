"""Tiny inputs the tests build themselves: option files, FGR folders, RLHF data, diffusion checkpoints."""
