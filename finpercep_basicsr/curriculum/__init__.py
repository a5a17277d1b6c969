"""Co-evolutionary Curriculum Learning (CCL): schedules that move the reward from RM_0 to RM_N."""
