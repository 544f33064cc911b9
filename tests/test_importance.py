import jax
import numpy as np
import pytest

from sage_jax import importance


def _rand_attn(rng, layers, heads, t):
  a = rng.random((layers, heads, t, t)).astype(np.float32)
  return list(a / a.sum(-1, keepdims=True))


def test_cls_attention_known_answer():
  a = np.zeros((2, 4, 4), np.float32)
  a[0, 0] = [0.1, 0.6, 0.2, 0.1]
  a[1, 0] = [0.5, 0.1, 0.2, 0.2]
  got = np.asarray(importance.cls_attention({"attns": [a]}))
  want = np.array([0.7, 0.4, 0.3]) / 2
  np.testing.assert_allclose(got, want / want.sum(), rtol=1e-6)


def test_rollout_matches_numpy():
  rng = np.random.default_rng(0)
  attns = _rand_attn(rng, 3, 2, 6)
  joint = np.eye(6)
  for a in attns:
    a = 0.5 * a.mean(0) + 0.5 * np.eye(6)
    a = a / a.sum(-1, keepdims=True)
    joint = a @ joint
  want = joint[0, 1:] / joint[0, 1:].sum()
  np.testing.assert_allclose(importance.rollout({"attns": attns}), want, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(importance.IMPORTANCES))
def test_scores_are_distributions_and_vmap(name):
  rng = np.random.default_rng(1)
  batch = [np.stack(x) for x in zip(*[_rand_attn(rng, 2, 3, 10) for _ in range(4)])]
  out = dict(attns=batch, tokens=rng.normal(size=(4, 9, 8)).astype(np.float32))
  got = np.asarray(jax.vmap(importance.get(name))(out))
  assert got.shape == (4, 9) and (got >= 0).all()
  np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)


def test_unknown_score():
  with pytest.raises(ValueError, match="unknown importance 'x'; allowed: cls_attention"):
    importance.get("x")
