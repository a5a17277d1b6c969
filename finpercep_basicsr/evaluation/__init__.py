"""Evaluation: score images with a reward model, evaluate SR runs, benchmark reward models per SR family, write
reports, and time the training steps (``rlhf_step_bench``, ``rm_cost_bench``)."""
