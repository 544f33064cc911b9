"""The benchmark's PyTorch eager reference: the pipeline written the usual PyTorch way, on one
torch device (docs/benchmark.md). CUDA is asynchronous: call `sync()` before a clock.
"""
import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from sage_jax.models import vit
from sage_jax import timing

THRESHOLD_RULES = ("threshold", "sum_threshold")
TORCH_RULES = ("topk", "sage", "diversity") + THRESHOLD_RULES


def sync():
  """Waits for every CUDA kernel queued so far (a no-op when torch never used CUDA)."""
  if torch.cuda.is_initialized():
    torch.cuda.synchronize()


def resolve_device(choice: str, jax_backend: str) -> torch.device:
  """'auto' (CUDA when jax runs on a GPU and torch sees one) | 'cpu' | 'cuda' -> a device."""
  if choice not in ("auto", "cpu", "cuda"):
    raise ValueError(f"torch device {choice!r} is not allowed; allowed: auto, cpu, cuda")
  if choice == "auto":
    gpu = jax_backend in ("gpu", "cuda", "rocm")
    choice = "cuda" if gpu and torch.cuda.is_available() else "cpu"
  if choice == "cuda":
    if not torch.cuda.is_available():
      raise ValueError("torch device 'cuda' is not available here (torch "
                       f"{torch.__version__} sees no CUDA device); use auto or cpu")
    torch.set_float32_matmul_precision("high")  # TF32, as XLA's default float32 dot on GPUs
  return torch.device(choice)


def autocast(device: torch.device, compute_dtype: str):
  """bf16 autocast on `device` when compute_dtype is bfloat16."""
  if compute_dtype == "float32":
    return contextlib.nullcontext()
  if compute_dtype != "bfloat16":
    raise ValueError(f"compute dtype {compute_dtype!r} is not allowed; allowed: float32, "
                     "bfloat16")
  return torch.autocast(device.type, dtype=torch.bfloat16)


def matmul(n: int, dtype: str, device: torch.device):
  """-> a call of one n x n matmul in dtype on device."""
  gen = torch.Generator(device).manual_seed(0)
  a, b = torch.randn(2, n, n, generator=gen, device=device, dtype=getattr(torch, dtype))
  return lambda: torch.mm(a, b)


class TorchViT:
  """Eager PyTorch twin of a sage_jax ViT with the same weights (timm style)."""

  def __init__(self, model: vit.ViT, params, channels: int, device="cpu"):
    t = lambda a: torch.from_numpy(np.array(a, np.float32)).to(device)
    dense = lambda p: (t(p["kernel"]).T.contiguous(), t(p["bias"]))  # [in, out] -> [out, in]
    norm = lambda p: (t(p["scale"]), t(p["bias"]))
    p = model.patch_size
    kernel = t(params["patch_embed"]["kernel"]).reshape(p, p, channels, model.width)
    self.patch = (kernel.permute(3, 2, 0, 1).contiguous(), t(params["patch_embed"]["bias"]))
    self.pos, self.cls = t(params["pos_embed"])[0], t(params["cls_token"])[0]
    self.blocks = [dict(norm1=norm(b["norm1"]), qkv=dense(b["attn"]["qkv"]),
                        proj=dense(b["attn"]["proj"]), norm2=norm(b["norm2"]),
                        fc1=dense(b["fc1"]), fc2=dense(b["fc2"]))
                   for b in (params[f"blocks_{i}"] for i in range(model.depth))]
    self.norm, self.head = norm(params["norm"]), dense(params["head"])
    self.patch_size, self.width, self.heads = p, model.width, model.num_heads

  def _block(self, x, blk, need_attn):
    b, t, d = x.shape
    y = F.layer_norm(x, (d,), *blk["norm1"], eps=1e-6)
    q, k, v = F.linear(y, *blk["qkv"]).reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
    attn = None
    if need_attn:
      attn = (q * q.shape[-1] ** -0.5 @ k.transpose(-2, -1)).softmax(-1)
      y = attn @ v
    else:
      y = F.scaled_dot_product_attention(q, k, v)
    x = x + F.linear(y.transpose(1, 2).reshape(b, t, d), *blk["proj"])
    y = F.gelu(F.linear(F.layer_norm(x, (d,), *blk["norm2"], eps=1e-6), *blk["fc1"]))
    return x + F.linear(y, *blk["fc2"]), attn

  def __call__(self, images, keep_idx=None, need_attn=False):
    """images: f32[B, C, H, W]; keep_idx: i64[B, K] or None -> (logits, last attn, tokens)."""
    x = F.conv2d(images, *self.patch, stride=self.patch_size).flatten(2).transpose(1, 2)
    if keep_idx is None:
      x = x + self.pos[1:]
    else:
      x = x.gather(1, keep_idx[..., None].expand(-1, -1, self.width)) + self.pos[1:][keep_idx]
    x = torch.cat([(self.cls + self.pos[:1]).expand(x.shape[0], 1, -1), x], 1)
    for i, blk in enumerate(self.blocks):
      x, attn = self._block(x, blk, need_attn and i == len(self.blocks) - 1)
    x = F.layer_norm(x, (self.width,), *self.norm, eps=1e-6)
    return F.linear(x[:, 0], *self.head), attn, x[:, 1:]


def torch_edge(model: TorchViT, images):
  """The edge step: CLS->patch importance (head mean, sums to 1), min-entropy, tokens."""
  logits, attn, tokens = model(images, need_attn=True)
  imp = attn[:, :, 0, 1:].mean(1)
  imp = imp / imp.sum(-1, keepdim=True).clamp_min(1e-12)
  uncertainty = -F.log_softmax(logits, -1).amax(-1) / math.log(2.0)
  return dict(uncertainty=uncertainty, importance=imp, tokens=tokens)


def _farthest_point(x, seed, budget):
  """Greedy max-min cosine on unit rows x: f32[B, P, D], seeded at seed: i64[B] -> i64[B, K]."""
  rows = torch.arange(x.shape[0], device=x.device)
  chosen = torch.empty(x.shape[0], budget, dtype=torch.long, device=x.device)
  chosen[:, 0] = seed
  min_dist = 1.0 - torch.bmm(x, x[rows, seed][..., None])[..., 0]
  min_dist[rows, seed] = -math.inf
  for i in range(1, budget):
    j = min_dist.argmax(1)
    chosen[:, i] = j
    min_dist = torch.minimum(min_dist, 1.0 - torch.bmm(x, x[rows, j][..., None])[..., 0])
    min_dist[rows, j] = -math.inf
  return chosen


def torch_select(name, importance, tokens, budget, kw):
  """-> i64[B, K], or a list of i64[k_b] for the threshold rules; float32 as sage_jax's."""
  with torch.autocast(importance.device.type, enabled=False):
    importance, tokens = importance.float(), tokens.float()
    if name == "topk":
      return importance.topk(budget, dim=1).indices
    if name == "diversity":
      return _farthest_point(F.normalize(tokens, dim=-1), importance.argmax(1), budget)
    if name == "sage":
      n = importance.shape[1]
      pool_size = min(n, max(budget, math.ceil(kw["pool_ratio"] * budget)))
      pool = importance.topk(pool_size, dim=1).indices.sort(1).values
      x = F.normalize(tokens.gather(1, pool[..., None].expand(-1, -1, tokens.shape[-1])), dim=-1)
      return pool.gather(1, _farthest_point(x, importance.gather(1, pool).argmax(1), budget))
    if name in THRESHOLD_RULES:
      kept = []
      delta = 1.0 / importance.shape[1] if kw["delta"] is None else kw["delta"]
      for imp in importance:  # variable length: one image at a time
        order = imp.argsort(descending=True, stable=True)
        inside = imp >= delta if name == "threshold" else imp[order].cumsum(0) <= delta
        kept.append(order[:min(budget, max(1, int(inside.sum())))])
      return kept
  raise ValueError(f"rule {name!r} has no torch reference; allowed: {', '.join(TORCH_RULES)}")


def torch_server(model: TorchViT, images, sel):
  """Server predictions from the selected patches (image by image for a list)."""
  if isinstance(sel, list):
    return [model(images[b:b + 1], idx[None])[0].argmax(-1) for b, idx in enumerate(sel)]
  return model(images, sel)[0].argmax(-1)


def torch_sweep(edge, server, images, specs, budgets, n_off):
  """One pass over the batch per (rule, budget) and one for the ceiling -> (predictions per
  (rule, budget), seconds per rule, seconds on the ceiling)."""
  def offloaded():
    out = torch_edge(edge, images)
    return out, out["uncertainty"].argsort(descending=True, stable=True)[:n_off]

  preds, seconds = [], []
  sync()
  for name, kw in specs:
    elapsed = timing.stopwatch()
    for k in budgets:
      out, off = offloaded()
      sel = torch_select(name, out["importance"][off], out["tokens"][off], k, kw)
      preds.append(torch_server(server, images[off], sel))
    sync()
    seconds.append(elapsed())
  elapsed = timing.stopwatch()
  server(images[offloaded()[1]])
  sync()
  return preds, seconds, elapsed()
