"""sage_jax: evidence selection for edge-cloud ViT inference under hard uplink budgets."""
