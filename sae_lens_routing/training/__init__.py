"""Training: the multi-layer activation store and cache, the runners (ours and SAELens's stock one), the
trainer, data-parallel helpers, training-time evaluation and run configs."""
