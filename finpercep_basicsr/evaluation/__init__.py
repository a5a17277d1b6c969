"""Evaluation: score images with a reward model, evaluate SR runs, benchmark reward models per SR family."""
