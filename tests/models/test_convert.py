"""Converted checkpoints against an independent PyTorch reference.

The reference is Hugging Face transformers' ViTForImageClassification (eager
attention, exact GELU, LayerNorm eps 1e-6; the Hub's non-distilled DeiT
models are this class) with random weights, at DeiT-Tiny shapes and at a
small other shape. It is written out in every supported format:
  * HF:   `save_pretrained` (config.json + model.safetensors), and the same
          state dict as pytorch_model.bin;
  * timm: .safetensors and .pth, renamed by TIMM_FROM_HF below;
  * npz:  Google ViT layout, renamed and reshaped by NPZ_FROM_HF below;
each file goes through sage_jax.models.convert and sage_jax's ViT, and logits, the
last block's CLS attention and the subset (server) forward are compared with
the reference on random images. The measured differences are printed.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
import transformers

from sage_jax.models import checkpoints
from sage_jax.models import convert
from sage_jax.models import vit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

torch.set_num_threads(2)
LOGITS_TOL, ATTN_TOL = 1e-4, 1e-5

# name -> HF ViTConfig fields. DeiT-Ti/16 at full depth, plus a small other shape.
SHAPES = {
    "deit_tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3,
                      image_size=224, patch_size=16, num_labels=1000),
    "w64_d2": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   image_size=32, patch_size=8, num_labels=10),
}
FORMATS = ("hf_dir", "hf_bin", "timm_safetensors", "timm_pth", "npz")

# timm VisionTransformer name <- HF ViT name on disk ("{i}": block index).
# timm fuses q, k, v into one `qkv` matrix: rows [q; k; v].
TIMM_FROM_HF = {
    "cls_token": "vit.embeddings.cls_token",
    "pos_embed": "vit.embeddings.position_embeddings",
    "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
    "blocks.{i}.norm1.weight": "vit.encoder.layer.{i}.layernorm_before.weight",
    "blocks.{i}.norm1.bias": "vit.encoder.layer.{i}.layernorm_before.bias",
    "blocks.{i}.attn.qkv.weight": ("vit.encoder.layer.{i}.attention.attention.query.weight",
                                   "vit.encoder.layer.{i}.attention.attention.key.weight",
                                   "vit.encoder.layer.{i}.attention.attention.value.weight"),
    "blocks.{i}.attn.qkv.bias": ("vit.encoder.layer.{i}.attention.attention.query.bias",
                                 "vit.encoder.layer.{i}.attention.attention.key.bias",
                                 "vit.encoder.layer.{i}.attention.attention.value.bias"),
    "blocks.{i}.attn.proj.weight": "vit.encoder.layer.{i}.attention.output.dense.weight",
    "blocks.{i}.attn.proj.bias": "vit.encoder.layer.{i}.attention.output.dense.bias",
    "blocks.{i}.norm2.weight": "vit.encoder.layer.{i}.layernorm_after.weight",
    "blocks.{i}.norm2.bias": "vit.encoder.layer.{i}.layernorm_after.bias",
    "blocks.{i}.mlp.fc1.weight": "vit.encoder.layer.{i}.intermediate.dense.weight",
    "blocks.{i}.mlp.fc1.bias": "vit.encoder.layer.{i}.intermediate.dense.bias",
    "blocks.{i}.mlp.fc2.weight": "vit.encoder.layer.{i}.output.dense.weight",
    "blocks.{i}.mlp.fc2.bias": "vit.encoder.layer.{i}.output.dense.bias",
    "norm.weight": "vit.layernorm.weight",
    "norm.bias": "vit.layernorm.bias",
    "head.weight": "classifier.weight",
    "head.bias": "classifier.bias",
}

# Google ViT .npz name <- (HF name, reshape). Flax Dense kernels are [in, out]
# (torch: [out, in]); attention kernels split heads: query/key/value [D, H, hd],
# out [H, hd, D]; the patch conv is [p, p, C, D] (torch: [D, C, p, p]).
_B, _L = "Transformer/encoderblock_{i}/", "vit.encoder.layer.{i}."
_T = lambda w, d, h: w.T
_SAME = lambda w, d, h: w
_HEADS_IN = lambda w, d, h: w.T.reshape(d, h, d // h)
_HEADS_BIAS = lambda w, d, h: w.reshape(h, d // h)
_HEADS_OUT = lambda w, d, h: w.T.reshape(h, d // h, d)
NPZ_FROM_HF = {
    "embedding/kernel": ("vit.embeddings.patch_embeddings.projection.weight",
                         lambda w, d, h: w.transpose(2, 3, 1, 0)),
    "embedding/bias": ("vit.embeddings.patch_embeddings.projection.bias", _SAME),
    "cls": ("vit.embeddings.cls_token", _SAME),
    "Transformer/posembed_input/pos_embedding": ("vit.embeddings.position_embeddings", _SAME),
    _B + "LayerNorm_0/scale": (_L + "layernorm_before.weight", _SAME),
    _B + "LayerNorm_0/bias": (_L + "layernorm_before.bias", _SAME),
    **{_B + f"MultiHeadDotProductAttention_1/{n}/kernel":
       (_L + f"attention.attention.{n}.weight", _HEADS_IN) for n in ("query", "key", "value")},
    **{_B + f"MultiHeadDotProductAttention_1/{n}/bias":
       (_L + f"attention.attention.{n}.bias", _HEADS_BIAS) for n in ("query", "key", "value")},
    _B + "MultiHeadDotProductAttention_1/out/kernel":
        (_L + "attention.output.dense.weight", _HEADS_OUT),
    _B + "MultiHeadDotProductAttention_1/out/bias": (_L + "attention.output.dense.bias", _SAME),
    _B + "LayerNorm_2/scale": (_L + "layernorm_after.weight", _SAME),
    _B + "LayerNorm_2/bias": (_L + "layernorm_after.bias", _SAME),
    _B + "MlpBlock_3/Dense_0/kernel": (_L + "intermediate.dense.weight", _T),
    _B + "MlpBlock_3/Dense_0/bias": (_L + "intermediate.dense.bias", _SAME),
    _B + "MlpBlock_3/Dense_1/kernel": (_L + "output.dense.weight", _T),
    _B + "MlpBlock_3/Dense_1/bias": (_L + "output.dense.bias", _SAME),
    "Transformer/encoder_norm/scale": ("vit.layernorm.weight", _SAME),
    "Transformer/encoder_norm/bias": ("vit.layernorm.bias", _SAME),
    "head/kernel": ("classifier.weight", _T),
    "head/bias": ("classifier.bias", _SAME),
}


def hf_to_timm_layout(sd, depth):
  def get(names, i):
    if isinstance(names, tuple):
      return np.concatenate([sd[n.format(i=i)] for n in names], axis=0)
    return sd[names.format(i=i)]
  return {k.format(i=i): get(v, i) for k, v in TIMM_FROM_HF.items()
          for i in range(depth if "{i}" in k else 1)}


def hf_to_npz_layout(sd, depth, width, heads):
  return {k.format(i=i): f(sd[n.format(i=i)], width, heads) for k, (n, f) in NPZ_FROM_HF.items()
          for i in range(depth if "{i}" in k else 1)}


def random_reference(shape, seed=0):
  """HF ViT with weights drawn so activations stay O(1) and attention is peaked."""
  cfg = transformers.ViTConfig(intermediate_size=4 * shape["hidden_size"], layer_norm_eps=1e-6,
                               hidden_act="gelu", attn_implementation="eager", **shape)
  model = transformers.ViTForImageClassification(cfg).eval()
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      r = torch.randn(p.shape, generator=g)
      if "layernorm" in name and name.endswith("weight"):
        p.copy_(1 + 0.2 * r)
      elif name.endswith("bias"):
        p.copy_(0.1 * r)
      elif name.split(".")[-1] not in ("cls_token", "position_embeddings"):
        p.copy_(r / np.sqrt(np.prod(p.shape[1:])))  # 1/sqrt(fan_in)
      else:  # cls token, position embeddings
        p.copy_(0.5 * r)
  return model


def write_formats(model, shape, tmp):
  """-> {format: path}: the reference in every supported on-disk format."""
  paths = {f: str(tmp / f) for f in FORMATS}
  model.save_pretrained(paths["hf_dir"])
  sd = safetensors.numpy.load_file(os.path.join(paths["hf_dir"], "model.safetensors"))
  os.makedirs(paths["hf_bin"])
  with open(os.path.join(paths["hf_bin"], "config.json"), "w") as f:
    json.dump(model.config.to_dict(), f)
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()},
             os.path.join(paths["hf_bin"], "pytorch_model.bin"))
  depth, width, heads = (shape["num_hidden_layers"], shape["hidden_size"],
                         shape["num_attention_heads"])
  timm = hf_to_timm_layout(sd, depth)
  paths["timm_safetensors"] += ".safetensors"
  safetensors.numpy.save_file(timm, paths["timm_safetensors"])
  paths["timm_pth"] += ".pth"
  torch.save({"model": {k: torch.from_numpy(v) for k, v in timm.items()}}, paths["timm_pth"])
  paths["npz"] += ".npz"
  np.savez(paths["npz"], **hf_to_npz_layout(sd, depth, width, heads))
  return paths


def reference_subset_logits(model, pixels, keep_idx, keep_mask):
  """HF modules on the kept patches only: patch embeddings + *their* position
  embeddings, CLS prepended, one image at a time so masked slots never exist."""
  emb = model.vit.embeddings
  pos = emb.position_embeddings
  out = []
  with torch.no_grad():
    for b in range(len(pixels)):
      idx = torch.from_numpy(keep_idx[b][keep_mask[b]]).long()
      x = emb.patch_embeddings(pixels[b:b + 1])[:, idx] + pos[:, 1:][:, idx]
      h = torch.cat([emb.cls_token + pos[:, :1], x], dim=1)
      layers = getattr(model.vit, "layers", None) or model.vit.encoder.layer  # v5 / v4 names
      for layer in layers:
        h = layer(h, None)
        h = h[0] if isinstance(h, tuple) else h
      out.append(model.classifier(model.vit.layernorm(h)[:, 0]))
  return torch.cat(out).numpy()


@pytest.fixture(scope="module", params=list(SHAPES))
def case(request, tmp_path_factory):
  shape = SHAPES[request.param]
  model = random_reference(shape)
  rng = np.random.default_rng(1)
  size, n = shape["image_size"], (shape["image_size"] // shape["patch_size"]) ** 2
  images = rng.standard_normal((2, size, size, 3)).astype(np.float32)
  pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())  # NCHW
  with torch.no_grad():
    ref = model(pixel_values=pixels, output_attentions=True)
  k = n // 4
  keep_idx = np.stack([rng.permutation(n)[:k] for _ in images]).astype(np.int32)
  keep_mask = np.ones((2, k), bool)
  keep_mask[1, -3:] = False  # padded slots: must not change the result
  ref_subset = reference_subset_logits(model, pixels, keep_idx, keep_mask)
  paths = write_formats(model, shape, tmp_path_factory.mktemp(request.param))
  return dict(name=request.param, shape=shape, model=model, images=images, paths=paths,
              logits=ref.logits.numpy(), cls_attn=ref.attentions[-1][:, :, 0].numpy(),
              keep_idx=keep_idx, keep_mask=keep_mask, subset=ref_subset, apply={})


def _apply(case, arch):
  """The jitted forward of `arch`, the architecture a test's own conversion returned;
  cached per architecture (every format of a shape should give the same one)."""
  key = json.dumps(arch, sort_keys=True)
  if key not in case["apply"]:
    model = vit.ViT(**{k: arch[k] for k in ("num_classes", "width", "depth", "num_heads",
                                            "mlp_dim", "patch_size", "num_patches")})
    case["apply"][key] = jax.jit(lambda p, x, i=None, m=None: model.apply({"params": p}, x, i, m))
  return case["apply"][key]


@pytest.mark.parametrize("fmt", FORMATS)
def test_parity(case, fmt, capsys):
  shape = case["shape"]
  # timm files do not record the head count (default width/64, DeiT's 64-dim heads).
  heads = shape["num_attention_heads"] if fmt.startswith("timm") else None
  params, meta = convert.convert(case["paths"][fmt], num_heads=heads)
  arch = meta["arch"]
  assert (arch["width"], arch["depth"], arch["num_heads"], arch["patch_size"],
          arch["num_classes"], arch["image_size"]) == (
      shape["hidden_size"], shape["num_hidden_layers"], shape["num_attention_heads"],
      shape["patch_size"], shape["num_labels"], shape["image_size"])
  assert meta["variant"] == ("Ti/16" if case["name"] == "deit_tiny" else None)
  fn = _apply(case, arch)
  logits, out = fn(params, case["images"])
  subset, _ = fn(params, case["images"], case["keep_idx"], case["keep_mask"])
  d_logits = float(np.abs(np.asarray(logits) - case["logits"]).max())
  d_attn = float(np.abs(np.asarray(out["attn"][:, :, 0]) - case["cls_attn"]).max())
  d_subset = float(np.abs(np.asarray(subset) - case["subset"]).max())
  with capsys.disabled():
    print(f"\nparity {case['name']:9s} {fmt:16s} max|diff| logits {d_logits:.2e}  "
          f"cls-attention {d_attn:.2e}  subset logits {d_subset:.2e}")
  assert d_logits <= LOGITS_TOL and d_subset <= LOGITS_TOL and d_attn <= ATTN_TOL


def test_big_vision_npz_layout(case, tmp_path):
  """big_vision names blocks' modules _0/_1 and gives CLS no position embedding."""
  if case["name"] != "w64_d2":
    pytest.skip("one shape is enough for a renaming")
  with np.load(case["paths"]["npz"]) as z:
    google = {k: z[k] for k in z.files}
  bv = {}
  for k, v in google.items():
    k = (k.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
         .replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0"))
    bv["params/" + k] = v
  pos = bv.pop("params/Transformer/posembed_input/pos_embedding")
  bv["params/pos_embedding"] = pos[:, 1:]
  bv["params/cls"] = bv["params/cls"] + pos[:, :1]
  np.savez(tmp_path / "bv.npz", **bv)
  params, meta = convert.convert(str(tmp_path / "bv.npz"))
  logits, _ = _apply(case, meta["arch"])(params, case["images"])
  np.testing.assert_allclose(np.asarray(logits), case["logits"], atol=LOGITS_TOL, rtol=0)


def test_variant_mismatch_names_the_dimension(case):
  if case["name"] == "deit_tiny":
    convert.convert(case["paths"]["timm_safetensors"], variant="Ti/16")
    with pytest.raises(ValueError, match=r"width=192, but variant 'S/16' has width=384"):
      convert.convert(case["paths"]["timm_safetensors"], variant="S/16")
  else:
    with pytest.raises(ValueError, match=r"has width=64, but variant 'Ti/16'"):
      convert.convert(case["paths"]["npz"], variant="Ti/16")


def test_distilled_deit_is_refused(tmp_path):
  zeros = lambda *s: np.zeros(s, np.float32)
  timm = {"cls_token": zeros(1, 1, 8), "dist_token": zeros(1, 1, 8),
          "patch_embed.proj.weight": zeros(8, 3, 4, 4)}
  safetensors.numpy.save_file(timm, str(tmp_path / "d.safetensors"))
  with pytest.raises(ValueError, match="distilled DeiT"):
    convert.convert(str(tmp_path / "d.safetensors"))
  cfg = transformers.DeiTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, image_size=16, patch_size=8, num_labels=3)
  transformers.DeiTForImageClassificationWithTeacher(cfg).save_pretrained(tmp_path / "hf")
  with pytest.raises(ValueError, match="distilled DeiT"):
    convert.convert(str(tmp_path / "hf"))


def test_safetensors_reader_matches_library(tmp_path):
  """Our torch-free reader, including bf16 (upcast exactly) and f16."""
  g = torch.Generator().manual_seed(0)
  ts = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g).bfloat16(),
        "c": torch.randn(2, 2, generator=g).half()}
  safetensors.torch.save_file(ts, str(tmp_path / "x.safetensors"))
  got = convert.read_safetensors(str(tmp_path / "x.safetensors"))
  for k, v in ts.items():
    np.testing.assert_array_equal(got[k].astype(np.float32), v.float().numpy())


def test_unknown_tensors_and_files_are_refused(tmp_path):
  with pytest.raises(FileNotFoundError):
    convert.convert(str(tmp_path / "missing.safetensors"))
  (tmp_path / "x.ckpt").write_bytes(b"")
  with pytest.raises(ValueError, match="cannot tell the format"):
    convert.convert(str(tmp_path / "x.ckpt"))
  safetensors.numpy.save_file({"fc.weight": np.zeros((2, 2), np.float32)},
                              str(tmp_path / "y.safetensors"))
  with pytest.raises(ValueError, match="neither a timm nor a Hugging Face"):
    convert.convert(str(tmp_path / "y.safetensors"))


@pytest.mark.slow
def test_cli_reports_mismatch_without_traceback(case, tmp_path):
  if case["name"] != "w64_d2":
    pytest.skip("one shape is enough for the command line")
  cmd = [sys.executable, "-m", "sage_jax.models.convert", f"--src={case['paths']['npz']}",
         f"--dst={tmp_path / 'x.msgpack'}"]
  out = subprocess.run(cmd + ["--variant=Ti/16"], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 2 and "has width=64, but variant 'Ti/16'" in out.stderr
  assert "Traceback" not in out.stderr and not os.path.exists(tmp_path / "x.msgpack")
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  params, meta = checkpoints.load(str(tmp_path / "x.msgpack"))
  assert meta["source"]["format"] == "npz" and meta["arch"]["num_heads"] == 4


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "sage_jax.models.convert", f"--src={tmp_path / 'nope.pth'}",
                         f"--dst={tmp_path / 'out.msgpack'}"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "nope.pth" in last, last
  assert not (tmp_path / "out.msgpack").exists()
