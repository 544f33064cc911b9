"""The edge step: edge forward, the gate's uncertainty and every importance score; only
per-image values return, the offloaded rows' importance and tokens stay on the devices.
"""
import jax
import jax.numpy as jnp

from sage_jax import importance
from sage_jax.sweep import offload

# What the host reads of an edge batch; the rest stays on the devices.
SMALL = ("pred", "uncertainty", "finite", "attn_entropy", "logits")


def make_edge_step(model, importances, uncertainty_name):
  """importances: score names, the first one the default (attention entropy)."""
  score_fns = {name: jax.vmap(importance.get(name)) for name in importances}
  uncertainty = offload.get_uncertainty(uncertainty_name)

  @jax.jit
  def edge_step(params, images):
    logits, out = model.apply({"params": params}, images)
    finite = jnp.isfinite(images).all((1, 2, 3)) & jnp.isfinite(logits).all(-1)
    imp = {name: fn(out) for name, fn in score_fns.items()}
    default = imp[importances[0]]
    # Entropy of the importance distribution (bits): low = attention on few patches.
    attn_entropy = -(default * jnp.log2(jnp.maximum(default, 1e-30))).sum(-1)
    return dict(pred=logits.argmax(-1).astype(jnp.int32), uncertainty=uncertainty(logits),
                importance=imp, tokens=out["tokens"], finite=finite, attn_entropy=attn_entropy,
                logits=logits.astype(jnp.float32))
  return edge_step
