"""Weight conversion and export: packaged ncnn SR models to BasicSR, StableSR checkpoints, tuned policies."""
