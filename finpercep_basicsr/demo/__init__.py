"""The end-to-end demo: photos -> FGR data -> staged reward model -> RLHF three ways -> report."""
