"""The roofline projection (sage_jax/measure/roofline.py, a measure of configs/roofline.py): its
arithmetic on constructed costs, worked by hand, and the measure's whole path on tiny shapes
(no wall-time assertions)."""
import json
import math

import pytest

from sage_jax import defaults
from sage_jax.measure import roofline
from sage_jax.measure.roofline import Cost
from sage_jax.measure import run


def _config(**fields):
  c = defaults.roofline_config()
  c.update(fields)
  return c


def test_roofline_compute_and_memory_bound():
  # 2e12 FLOPs at 1e12 FLOP/s = 2 s; 1e9 bytes at 1e11 B/s = 0.01 s -> 2 s, compute-bound.
  assert roofline.roofline(Cost(2e12, 1e9), 1e12, 1e11) == (2.0, "compute")
  # 1e9 FLOPs = 1 ms; 1e12 bytes at 1e11 B/s = 10 s -> 10 s, memory-bound.
  assert roofline.roofline(Cost(1e9, 1e12), 1e12, 1e11) == (10.0, "memory")


def test_budget_step_puts_the_server_loop_back():
  # XLA counts the loop body once; select = step - chunk, then select + trips * chunk.
  assert roofline.budget_cost(Cost(1.0, 2.0), Cost(10.0, 20.0), 2.5) == Cost(26.0, 52.0)
  assert roofline.budget_cost(Cost(1.0, 2.0), Cost(10.0, 20.0), 0) == Cost(1.0, 2.0)


def test_trips_by_budget():
  # No K = N among the budgets: dedup x rules = 0.5 x 4 = 2 chunks each.
  assert roofline.trips_by_budget([16, 64], 0.5, 4, full_budget=196) == {16: 2.0, 64: 2.0}
  # With K = N: 0.5 x 4 x 3 = 6 chunks in all, 1 at K = N, (6 - 1) / 2 on each other.
  assert roofline.trips_by_budget([16, 64, 196], 0.5, 4, 196, 1.0) == {16: 2.5, 64: 2.5,
                                                                      196: 1.0}
  # Never more than one chunk per rule: 1 x 4 x 2 = 8, 0 at K = N, 8 capped at 4.
  assert roofline.trips_by_budget([16, 196], 1.0, 4, 196, 0.0) == {16: 4.0, 196: 0.0}


def test_sweep_total_by_hand():
  # 1000 images, batch 100 -> 10 edge steps; 35.7% offloaded = 357 images, server batch 50
  # -> ceil(7.14) = 8 server batches; 4 rules at dedup 0.5 -> 2 chunks a budget step.
  peak, bw = 1e12, 1e11
  costs = {"edge": Cost(2e12, 1e9),              # 2 s, compute
           "ceiling": Cost(1e9, 1e11),           # 1 s, memory
           ("select", 16): Cost(0.0, 1e10),      # + 2 chunks of (1e12, 1e9): 2e12 FLOPs
           ("chunk", 16): Cost(1e12, 1e9),       #   = 2 s vs 1.2e10 B = 0.12 s: 2 s, compute
           ("select", 64): Cost(0.0, 2e11),      # + 2 chunks of (1e11, 1e11): 2e11 FLOPs
           ("chunk", 64): Cost(1e11, 1e11)}      #   = 0.2 s vs 4e11 B = 4 s: 4 s, memory
  s = roofline.sweep_seconds(costs, peak, bw, images=1000, share=0.357, dedup=0.5, rules=4,
                             batch=100, server_batch=50)
  assert (s["edge_steps"], s["server_batches"], s["trips"]) == (10, 8, {16: 2.0, 64: 2.0})
  assert s["edge_s"] == pytest.approx(10 * 2.0)
  assert s["server_s"] == pytest.approx(8 * (1.0 + 2.0 + 4.0))
  assert s["seconds"] == pytest.approx(20 + 56)
  assert s["per_image_s"] == pytest.approx(76 / 1000)
  assert s["compute_s"] == pytest.approx(20 + 8 * 2.0)   # edge and the K=16 steps
  assert s["memory_s"] == pytest.approx(8 * (1.0 + 4.0))  # ceiling and the K=64 steps
  assert s["bound"] == "memory"
  # The FLOPs alone: 10 x 2 s + 8 x (0.001 + 2 + 0.2) s.
  assert s["flops_only_s"] == pytest.approx(20 + 8 * (0.001 + 2.0 + 0.2))

  # 76 chip-seconds on 8 chips in 2 hosts: 9.5 s; 1000 / 9.5 / 2 = 52.6 images/s a host,
  # at 10 images/s per core: 5.26 cores a host.
  sy = roofline.system(s["seconds"], 1000, chips=8, hosts=2, decode_per_core=10.0)
  assert sy["seconds"] == pytest.approx(9.5)
  assert sy["per_host_images_per_s"] == pytest.approx(1000 / 9.5 / 2)
  assert sy["cores_per_host"] == pytest.approx(1000 / 9.5 / 2 / 10)

  rows = roofline.project(costs, {"X": roofline.Peak(peak, bw, "doc")}, {"X": ("x-8", 8, 2)},
                          1000, 0.357, 0.5, 4, 100, 50, 10.0, flag="note")
  (row,) = rows
  assert row["chip_sweep_s"] == pytest.approx(76)
  assert row["edge_batch_s"] == pytest.approx(2.0)
  assert row["server_batch_s"] == pytest.approx(7.0)
  assert row["sweep_s"] == pytest.approx(9.5) and row["flag"] == "note"
  assert row[roofline.CPU_COMPILE] is None  # not measured
  (row,) = roofline.project(costs, {"X": roofline.Peak(peak, bw, "doc")}, {"X": ("x-8", 8, 2)},
                            1000, 0.357, 0.5, 4, 100, 50, 10.0, compile_s=3.0)
  assert row[roofline.CPU_COMPILE] == 3.0


def test_compile_seconds_of_the_sweep_leave_the_chunks_out():
  # The chunks are compiled only to count their cost; the sweep runs edge, ceiling, budgets.
  seconds = {"edge": 1.0, "ceiling": 2.0, ("chunk", 4): 40.0, ("budget", 4): 4.0,
             ("chunk", 8): 80.0, ("budget", 8): 8.0}
  assert roofline.sweep_compile_s(seconds) == 15.0
  assert roofline.sweep_compile_s({}) is None


def test_miss_flag():
  rows = [dict(shape="deit", step="edge", ratio=1.5), dict(shape="deit", step="ceiling",
                                                           ratio=0.6),
          dict(shape="fmnist", step="edge", ratio=9.0)]
  assert roofline.miss_flag(rows, "deit") == ""
  rows.append(dict(shape="deit", step="budget K=16", ratio=3.0))
  flag = roofline.miss_flag(rows, "deit")
  assert "1 of 3 deit steps" in flag and "budget K=16" in flag and "3.00" in flag


def test_peaks_name_their_documents():
  for name in ("H100 SXM", "H200", "A100 SXM 80GB", "TPU v4", "TPU v5e", "TPU v5p"):
    peak = roofline.PEAKS[name]
    assert peak.flops > 1e14 and peak.bandwidth > 5e11 and peak.source
    assert name in roofline.SYSTEMS


def test_bad_options_are_refused():
  with pytest.raises(ValueError, match="share 0.0 is not allowed"):
    roofline.check(_config(shape="fmnist", share=0.0))
  with pytest.raises(ValueError, match="unknown accelerator 'TPU v9'"):
    roofline.check(_config(shape="fmnist", accelerators="TPU v9"))
  with pytest.raises(ValueError, match="unknown check shape"):
    roofline.check(_config(shape="fmnist", check_shapes="mnist"))


@pytest.mark.slow
def test_command_path_on_tiny_shapes(tmp_path):
  """Costs (bfloat16), this machine's measures, the CPU check and the projection, on
  the Fashion-MNIST models with one rule and one budget."""
  c = _config(shape="fmnist", edge_batch=4, server_batch=2, sweep_rules="sage",
              sweep_budgets="8", dtypes="bfloat16", check_shapes="fmnist", check_batch=4,
              check_rules="sage", check_budgets="8", repeats=1, matmul_size=128,
              bandwidth_mb=4, decode_images=2)
  result = roofline.measure_and_project(roofline.check(c), log=lambda msg: None)
  steps = [r["step"] for r in result["costs"]]
  assert steps[:2] == ["edge (4 images)", "ceiling (2 rows)"] and len(steps) == 6
  assert steps[-1] == "select, every K (one program, 2 rows)"  # sage's traced-budget form
  # This CPU's compile seconds: on each program's row; select+dedup is the budget step's.
  compiled = {r["step"].split(" (")[0]: r[f"bfloat16_{roofline.CPU_COMPILE}"]
              for r in result["costs"]}
  assert compiled.pop("select+dedup K=8") is None and all(s > 0 for s in compiled.values())
  assert all(r[roofline.CPU_COMPILE] > 0 for r in result["check"])
  chunk = next(r for r in result["costs"] if r["step"].startswith("server chunk"))
  select = next(r for r in result["costs"] if r["step"].startswith("select"))
  for dtype in ("bfloat16",):  # float32 is compiled (and run) by the check below
    assert chunk[f"{dtype}_gflop"] > 0 and chunk[f"{dtype}_mb"] > 0
    # The budget step's one counted server chunk came off: what is left is the selection.
    assert select[f"{dtype}_gflop"] < 0.1 * chunk[f"{dtype}_gflop"]
  assert [r["step"] for r in result["check"]] == ["edge", "ceiling", "select", "chunk K=8",
                                                  "budget K=8"]
  for r in result["check"]:
    assert r["predicted_s"] > 0 and r["measured_s"] > 0
    assert r["ratio"] == pytest.approx(r["measured_s"] / r["predicted_s"])
  budget = result["check"][-1]
  assert budget["trips"] in (0, 1)  # one rule: at most one chunk of fresh rows
  m = result["machine"]
  assert m["flops"] > 0 and m["bandwidth"] > 0 and m["decode_per_core"] > 0
  assert [r["accelerator"] for r in result["projection"]] == list(roofline.PEAKS)
  for r in result["projection"]:
    assert r["flag"] == result["flag"] and r["sweep_s"] > 0
    assert r["cores_per_host"] == pytest.approx(r["per_host_images_per_s"]
                                                / m["decode_per_core"])
    assert math.isclose(r["sweep_s"] * r["chips"], r["chip_sweep_s"])
    assert r["flops_only_sweep_s"] <= r["sweep_s"]
    assert r[roofline.CPU_COMPILE] == pytest.approx(
        compiled["edge"] + compiled["ceiling"] + compiled["select, every K"]
        + compiled["budget step K=8"])
  json.dumps(result, default=str)


@pytest.mark.slow
def test_measure_writes_every_table(tmp_path, capsys):
  """The job's path: main's measure writer over the roofline's rows (no check, one dtype)."""
  c = _config(shape="fmnist", edge_batch=4, server_batch=2, sweep_rules="topk",
              sweep_budgets="4", dtypes="float32", check_shapes="", repeats=1,
              matmul_size=64, bandwidth_mb=1, decode_images=0, decode_per_core=100.0)
  rows = run.run_measures(c, str(tmp_path))["roofline"]
  assert [r["table"] for r in rows[:2]] == ["setup", "this machine"]
  assert "not checked at fmnist" in rows[0]["flag"]
  saved = json.loads((tmp_path / "roofline.json").read_text())
  assert saved["complete"] and len(saved["rows"]) == len(rows)
  md, text = (tmp_path / "roofline.md").read_text(), capsys.readouterr().out
  assert "| accelerator |" in md and "TPU v5e" in text and "costs:" in text
