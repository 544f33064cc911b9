"""Pretrained ViT/DeiT checkpoints -> sage_jax parameters, converted once:

  python -m sage_jax.models.convert --src=deit_tiny_patch16_224.safetensors \
      --dst=checkpoints/deit_tiny.msgpack --variant=Ti/16

timm (.safetensors, read without torch, .pth/.pt/.bin), Hugging Face ViT directories and
Google ViT / big_vision .npz are renamed into timm's layout, then one function builds the
Flax tree, checked against --variant. Distilled DeiT is refused (docs/imagenet.md).
"""
import json
import math
import os
import re
import sys

from absl import app, flags, logging
import numpy as np

from sage_jax import files
from sage_jax.models import checkpoints
from sage_jax.models import vit

# --------------------------------------------------------------------- reading

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path: str) -> dict:
  """-> {name: np.ndarray}: an 8-byte header size, a JSON header, the raw bytes."""
  with open(path, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(n))
    data = f.read()
  out = {}
  for name, t in header.items():
    if name == "__metadata__":
      continue
    raw = data[slice(*t["data_offsets"])]
    if t["dtype"] == "BF16":  # bf16 is the top half of an f32
      x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    elif t["dtype"] in _ST_DTYPES:
      x = np.frombuffer(raw, _ST_DTYPES[t["dtype"]])
    else:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {t['dtype']}")
    out[name] = x.reshape(t["shape"])
  return out


def read_torch(path: str) -> dict:
  """torch.save'd state dict (possibly under "model"/"state_dict") -> numpy."""
  try:
    import torch
  except ImportError:
    raise ImportError(f"reading {path} needs torch (pip install torch); a .safetensors "
                      "file of the same weights converts without it") from None
  sd = torch.load(path, map_location="cpu", weights_only=True)
  for key in ("model", "state_dict", "module"):  # training checkpoints wrap the weights
    if isinstance(sd, dict) and isinstance(sd.get(key), dict):
      sd = sd[key]
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in sd.items() if hasattr(v, "numpy")}


def read_source(src: str):
  """-> (format "timm" | "hf" | "npz", {name: array}, HF config dict or None)."""
  src = os.path.expanduser(src)
  if os.path.isdir(src):
    found = [f for f in ("model.safetensors", "pytorch_model.bin")
             if os.path.exists(os.path.join(src, f))]
    if not found or not os.path.exists(os.path.join(src, "config.json")):
      raise FileNotFoundError(f"{src} is a directory but not a Hugging Face checkpoint "
                              "(config.json + model.safetensors or pytorch_model.bin)")
    src = os.path.join(src, found[0])
  if not os.path.exists(src):
    raise FileNotFoundError(f"checkpoint not found: {src}")
  if src.endswith(".npz"):
    with np.load(src) as z:
      return "npz", {k: z[k] for k in z.files}, None
  if src.endswith(".safetensors"):
    tensors = read_safetensors(src)
  elif src.endswith((".pth", ".pt", ".bin")):
    tensors = read_torch(src)
  else:
    raise ValueError(f"cannot tell the format of {src}; expected .safetensors, .pth, .pt, "
                     ".bin, .npz or a Hugging Face directory")
  if "patch_embed.proj.weight" in tensors:
    return "timm", tensors, None
  if any("embeddings.patch_embeddings" in k for k in tensors):
    cfg_path = os.path.join(os.path.dirname(src), "config.json")
    return "hf", tensors, (json.loads(files.read_bytes(cfg_path))
                           if os.path.exists(cfg_path) else None)
  raise ValueError(f"{src} is neither a timm nor a Hugging Face ViT state dict "
                   f"(first names: {sorted(tensors)[:5]})")


# ------------------------------------------------------- every layout -> timm

def refuse_distilled(fmt: str, tensors: dict, hf_config=None) -> None:
  keys = " ".join(tensors)
  hf_deit = (hf_config or {}).get("model_type") == "deit"
  if "dist_token" in keys or "head_dist" in keys or "distillation" in keys or hf_deit:
    raise ValueError(
        f"this {fmt} checkpoint is a distilled DeiT (it has a distillation token"
        f"{' (HF model_type deit)' if hf_deit else ''}); sage_jax refuses it because the "
        "extra token changes every attention map and the prediction averages two heads. "
        "Use the non-distilled weights: timm deit_*_patch16_224 or HF "
        "facebook/deit-*-patch16-224 (ViT type).")


# HF name (after the "vit." prefix) -> timm name; old (<5) and new transformers names.
_LAYER = r"(?:encoder\.layer|layers)\.(\d+)\."
_SELF = _LAYER + r"attention\.(?:attention\.)?"
_HF_TO_TIMM = [
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (_LAYER + r"layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    *[(_SELF + rf"(?:{old}|{c}_proj)\.(weight|bias)", rf"blocks.\1.attn.{c}.\2")
      for c, old in (("q", "query"), ("k", "key"), ("v", "value"))],
    (_LAYER + r"attention\.(?:output\.dense|o_proj)\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_LAYER + r"layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_LAYER + r"(?:intermediate\.dense|mlp\.fc1)\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_LAYER + r"(?:output\.dense|mlp\.fc2)\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]


def _rename(tensors: dict, table, what: str) -> dict:
  out = {}
  for name, x in tensors.items():
    for pattern, repl in table:
      if re.fullmatch(pattern, name):
        out[re.sub(pattern, repl, name)] = x
        break
    else:
      raise ValueError(f"{what} checkpoint has a tensor sage_jax's ViT has no place for: {name}")
  return out


def _fuse_qkv(sd: dict) -> dict:
  """blocks.N.attn.{q,k,v}.* -> timm's fused blocks.N.attn.qkv.* ([q; k; v] rows)."""
  for name in [k for k in sd if ".attn.q." in k]:
    parts = [sd.pop(name.replace(".q.", f".{c}.")) for c in "qkv"]
    sd[name.replace(".q.", ".qkv.")] = np.concatenate(parts, axis=0)
  return sd


def hf_to_timm(tensors: dict, hf_config=None):
  """HF ViTForImageClassification state dict -> (timm state dict, num_heads or None)."""
  cfg = hf_config or {}
  if cfg.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"HF config hidden_act={cfg['hidden_act']!r}; sage_jax's ViT uses exact "
                     "GELU ('gelu')")
  if cfg.get("layer_norm_eps", 1e-6) != 1e-6:
    # HF's DeiT/ViT ports keep eps=1e-12 where timm trained with 1e-6; next to
    # activation variances of order 1 or more, outputs change by ~1e-6 relative.
    logging.warning("HF config layer_norm_eps=%g; sage_jax uses 1e-6", cfg["layer_norm_eps"])
  stripped = {re.sub(r"^(vit|deit)\.", "", k): v for k, v in tensors.items()
              if not k.startswith(("pooler.", "vit.pooler."))}
  return _fuse_qkv(_rename(stripped, _HF_TO_TIMM, "HF")), cfg.get("num_attention_heads")


# Google ViT block names (LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
# MlpBlock_3) and big_vision's (..._0, ..._0, LayerNorm_1, MlpBlock_0).
_BLOCK = r"Transformer/encoderblock_(\d+)/"
_ATTN = _BLOCK + r"MultiHeadDotProductAttention_\d/"
_NPZ_TO_TIMM = [
    (r"embedding/(kernel|bias)", r"patch_embed.proj.\1"),
    (r"cls", "cls_token"),
    (r"Transformer/posembed_input/pos_embedding", "pos_embed"),
    (r"pos_embedding", "pos_embed_patches"),  # big_vision: patches only, CLS has none
    (_BLOCK + r"LayerNorm_0/(scale|bias)", r"blocks.\1.norm1.\2"),
    *[(_ATTN + rf"{old}/(kernel|bias)", rf"blocks.\1.attn.{c}.\2")
      for c, old in (("q", "query"), ("k", "key"), ("v", "value"), ("proj", "out"))],
    (_BLOCK + r"LayerNorm_[12]/(scale|bias)", r"blocks.\1.norm2.\2"),
    (_BLOCK + r"MlpBlock_\d/Dense_0/(kernel|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_BLOCK + r"MlpBlock_\d/Dense_1/(kernel|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"Transformer/encoder_norm/(scale|bias)", r"norm.\1"),
    (r"head/(kernel|bias)", r"head.\1"),
]


def _npz_to_torch_shape(name: str, x: np.ndarray) -> np.ndarray:
  """Flax layouts -> torch's: kernels [in, out], q/k/v [D, H, hd], out [H, hd, D], the patch
  conv [p, p, C, D]."""
  if name == "patch_embed.proj.kernel":
    return x.transpose(3, 2, 0, 1)
  if re.search(r"attn\.[qkv]\.kernel", name):
    return x.reshape(x.shape[0], -1).T
  if re.search(r"attn\.[qkv]\.bias", name):
    return x.reshape(-1)
  if name.endswith("attn.proj.kernel"):
    return x.reshape(-1, x.shape[-1]).T
  return x.T if name.endswith(".kernel") else x


def npz_to_timm(arrays: dict):
  """Google ViT / big_vision .npz -> (timm state dict, num_heads)."""
  arrays = {re.sub(r"^(params/)?(img/)?", "", k): v for k, v in arrays.items()}
  if "cls" not in arrays:
    raise ValueError("this .npz ViT has no CLS token (global-average or MAP pooling); "
                     "sage_jax's ViT classifies from a CLS token")
  sd = {re.sub(r"\.(kernel|scale)$", ".weight", name): _npz_to_torch_shape(name, x)
        for name, x in _rename(arrays, _NPZ_TO_TIMM, "npz").items()}
  if "pos_embed_patches" in sd:  # big_vision: give the CLS slot a zero embedding
    patches = sd.pop("pos_embed_patches")
    sd["pos_embed"] = np.concatenate([np.zeros_like(patches[:, :1]), patches], axis=1)
  query = [v for k, v in arrays.items() if re.fullmatch(_ATTN + "query/kernel", k)]
  return _fuse_qkv(sd), (query[0].shape[1] if query else None)  # [D, H, hd]


# ---------------------------------------------------------------- timm -> ours

def infer_arch(sd: dict, num_heads=None) -> dict:
  """Architecture from timm-layout shapes; heads, which timm does not record, default to
  width / 64 as in every timm ViT/DeiT."""
  width, channels, patch, patch_w = sd["patch_embed.proj.weight"].shape
  tokens = sd["pos_embed"].shape[1]
  grid = math.isqrt(tokens - 1)
  if patch != patch_w or grid * grid != tokens - 1:
    raise ValueError(f"expected square patches and a square patch grid plus one CLS "
                     f"position; got patch {patch}x{patch_w} and {tokens} positions")
  if "head.weight" not in sd:
    raise ValueError("checkpoint has no classification head (head.weight)")
  depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
  heads = num_heads or width // 64
  if width % heads:
    raise ValueError(f"width {width} is not divisible by {heads} heads")
  return dict(width=int(width), depth=depth, num_heads=int(heads),
              mlp_dim=int(sd["blocks.0.mlp.fc1.weight"].shape[0]), patch_size=int(patch),
              num_patches=grid * grid, image_size=grid * int(patch), channels=int(channels),
              num_classes=int(sd["head.weight"].shape[0]))


def timm_to_params(sd: dict, arch: dict) -> dict:
  """timm state dict -> the parameter tree of `vit.ViT` (f32 numpy arrays)."""
  sd = {k: np.asarray(v, np.float32) for k, v in sd.items()}
  used = set()

  def take(name):
    if name not in sd:
      raise ValueError(f"checkpoint is missing {name}")
    used.add(name)
    return sd[name]

  dense = lambda n: {"kernel": take(n + ".weight").T, "bias": take(n + ".bias")}
  norm = lambda n: {"scale": take(n + ".weight"), "bias": take(n + ".bias")}
  w = take("patch_embed.proj.weight")  # [D, C, p, p] -> [p*p*C, D], patchify's order
  params = {
      "patch_embed": {"kernel": w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]),
                      "bias": take("patch_embed.proj.bias")},
      "cls_token": take("cls_token"), "pos_embed": take("pos_embed"),
      "norm": norm("norm"), "head": dense("head")}
  for i in range(arch["depth"]):
    b = f"blocks.{i}."
    params[f"blocks_{i}"] = {
        "norm1": norm(b + "norm1"), "norm2": norm(b + "norm2"),
        "attn": {"qkv": dense(b + "attn.qkv"), "proj": dense(b + "attn.proj")},
        "fc1": dense(b + "mlp.fc1"), "fc2": dense(b + "mlp.fc2")}
  unused = sorted(set(sd) - used)
  if unused:
    raise ValueError(f"checkpoint has tensors sage_jax's ViT has no place for: {unused[:8]}")
  return params


def match_variant(arch: dict):
  """The sage_jax variant name with this architecture, or None."""
  for name in vit.VARIANTS:
    v = vit.decode_variant(name)
    if all(arch[k] == v[k] for k in v):
      return name
  return None


def check_variant(arch: dict, variant: str, src: str) -> None:
  """Raises ValueError naming the first dimension where checkpoint and variant differ."""
  for key, want in vit.decode_variant(variant).items():
    if arch[key] != want:
      raise ValueError(f"checkpoint {src} has {key}={arch[key]}, but variant {variant!r} "
                       f"has {key}={want}")


def convert(src: str, variant=None, num_heads=None):
  """Any supported checkpoint -> (params, meta), checked against `variant` (e.g. "Ti/16"),
  which also gives timm files their head count."""
  fmt, tensors, hf_config = read_source(src)
  refuse_distilled(fmt, tensors, hf_config)
  if fmt == "hf":
    sd, stored_heads = hf_to_timm(tensors, hf_config)
  elif fmt == "npz":
    sd, stored_heads = npz_to_timm(tensors)
  else:
    sd, stored_heads = tensors, None
  if not (stored_heads or num_heads) and variant:
    num_heads = vit.decode_variant(variant)["num_heads"]
  arch = infer_arch(sd, stored_heads or num_heads)
  if variant:
    check_variant(arch, variant, src)
  if hf_config and hf_config.get("image_size", arch["image_size"]) != arch["image_size"]:
    raise ValueError(f"config.json says image_size={hf_config['image_size']}, the position "
                     f"embeddings give {arch['image_size']}")
  meta = dict(variant=variant or match_variant(arch), num_classes=arch["num_classes"],
              image_size=arch["image_size"], arch=arch,
              source=dict(format=fmt, path=os.path.abspath(os.path.expanduser(src))))
  return timm_to_params(sd, arch), meta


def main(argv):
  del argv
  f = flags.FLAGS
  try:
    params, meta = convert(f.src, f.variant, f.num_heads)
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"error: {e}", file=sys.stderr)  # a user error: one line, not a traceback; exit 2
    sys.exit(2)
  checkpoints.save(f.dst, params, meta)
  if meta["variant"] is None:
    logging.warning("architecture %s matches no sage_jax variant (%s)", meta["arch"],
                    ", ".join(vit.VARIANTS))
  print(f"wrote {f.dst}: variant {meta['variant']}, {meta['num_classes']} classes, "
        f"{meta['image_size']}px, from {meta['source']['format']} {f.src}")


if __name__ == "__main__":  # flags defined here only, so importing this module adds none
  flags.DEFINE_string("src", None, "timm .safetensors/.pth, HF directory, or ViT .npz.")
  flags.DEFINE_string("dst", None, "Output sage_jax checkpoint (.msgpack).")
  flags.DEFINE_string("variant", None, "Expected sage_jax variant, e.g. Ti/16 or B/16.")
  flags.DEFINE_integer("num_heads", None, "Heads, for timm files without --variant "
                       "(default width/64).")
  flags.mark_flags_as_required(["src", "dst"])
  app.run(main)
