"""The reward-hacking benchmark: RLHF set-ups x seeds, measured on held-out photos by an independent judge."""
