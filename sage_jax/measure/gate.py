"""The gate's eta, chosen on held-out images: the edge's uncertainty over dataset.split (a
slice of the training images kept out of training, never the test split) -> the eta that
offloads gate.fraction of them, and the share the configured eta offloads there."""
import dataclasses

import numpy as np

from sage_jax.data import input_pipeline
from sage_jax.sweep import offload
from sage_jax.sweep import pipeline
from sage_jax.sweep import plan as plan_lib


def rows(config, workdir, log):
  del workdir
  plan = plan_lib.make(config)
  ds, gate = plan.dataset, plan.gate
  if input_pipeline.split_range(ds, ds.split)[0] == "test":
    raise ValueError(f"dataset.split {ds.split!r} is not allowed for the gate's eta: it reads "
                     "the test split; give held-out training images, e.g. train[50000:]")
  n = input_pipeline.num_examples(ds, plan.num_images)
  pipe = pipeline.build(plan, pipeline.load_models(plan))
  u, _ = pipeline.uncertainties(pipe, input_pipeline.eval_batches(ds, plan.batch_size, 0, n))
  log(f"gate: the edge's {gate.uncertainty} over {n} images of {ds.split}")
  threshold = offload.calibrate_fraction(u, gate.fraction)
  uncertainty = "min_entropy" if gate.uncertainty == "fraction" else gate.uncertainty
  # margin's threshold is -eta (offload.gate_threshold); the others' is eta itself.
  eta = -threshold if uncertainty == "margin" else threshold
  # The configured eta with this uncertainty (the fraction gate's own is min_entropy).
  configured = offload.gate_threshold(dataclasses.replace(gate, uncertainty=uncertainty))
  yield dict(table="gate", dataset=ds.name, split=ds.split, images=int(n),
             uncertainty=uncertainty, target_share=float(gate.fraction), eta=float(eta),
             share_at_eta=float(np.mean(u > threshold)), configured_eta=float(gate.eta),
             share_at_configured_eta=float(np.mean(u > configured)))
