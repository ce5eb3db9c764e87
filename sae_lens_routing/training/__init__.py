"""Training: the multi-layer activation store and cache, the runners, the trainer and run configs."""
