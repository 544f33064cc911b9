"""Uplink arithmetic: bits per evidence unit (a raw patch plus its index), units per bit
budget, and serialisation latency per channel (no queueing or headers).
"""
import math
import numbers

# Typical uplink rates in bits/s. They are assumptions for illustration, not measurements:
# pass your own dict wherever `rates` is taken. Figures are round numbers near the
# standards' uplink peaks (IoT classes) or commonly reported typical throughputs.
CHANNELS = {
    # LoRaWAN, spreading factor 7 at 125 kHz (data rate DR5 in the EU868 regional
    # parameters): 5.47 kbit/s, the fastest common LoRa setting.
    "lora_sf7": 5.47e3,
    # NB-IoT (3GPP Rel-13, Cat-NB1): uplink peak about 62.5 kbit/s (multi-tone).
    "nb_iot": 60e3,
    # LTE-M (3GPP Rel-13, Cat-M1): uplink peak 1 Mbit/s.
    "lte_m": 1e6,
    # LTE (Cat-4 peak uplink 50 Mbit/s); about 10 Mbit/s is a typical measured uplink.
    "lte": 10e6,
    # 5G NR (sub-6 GHz): tens of Mbit/s is a typical measured uplink.
    "5g_nr": 50e6,
    # Wi-Fi (802.11ac/ax) uplink to a nearby access point.
    "wifi": 100e6,
}


def bits_per_unit(patch_size, channels: int, bit_depth: int = 8, num_patches=None) -> int:
  """Raw pixel bits of one patch + ceil(log2 N) bits to name its position.

  patch_size: int (square) or (height, width) in pixels; num_patches: N, or None when
  positions are not sent (e.g. a fixed, known order). 4x4x1 8-bit patches with N = 49:
  128 + 6 = 134 bits; 16x16x3 with N = 196: 6144 + 8 = 6152 bits.
  """
  ph, pw = ((patch_size, patch_size) if isinstance(patch_size, numbers.Integral)
            else tuple(patch_size))
  for name, v in (("patch_size", ph), ("patch_size", pw), ("channels", channels),
                  ("bit_depth", bit_depth)):
    if not (isinstance(v, numbers.Integral) and v >= 1):
      raise ValueError(f"{name} {v!r} is not allowed; it must be an integer >= 1")
  index_bits = 0
  if num_patches is not None:
    if not (isinstance(num_patches, numbers.Integral) and num_patches >= 1):
      raise ValueError(f"num_patches {num_patches!r} is not allowed; it must be an integer >= 1")
    index_bits = math.ceil(math.log2(num_patches)) if num_patches > 1 else 0
  return int(ph * pw * channels * bit_depth + index_bits)


def units_for_bits(budget_bits, bits_per_unit) -> int:
  """How many whole units fit in `budget_bits` (floor); fewer than one is an error."""
  if not bits_per_unit > 0:
    raise ValueError(f"bits_per_unit {bits_per_unit} is not allowed; it must be > 0")
  units = math.floor(budget_bits / bits_per_unit)
  if units < 1:
    raise ValueError(f"budget_bits {budget_bits} is too small: one unit needs {bits_per_unit} "
                     f"bits, so the budget must be >= {bits_per_unit}")
  return units


def latency_ms(bits, rate_bps):
  """Serialisation time of `bits` at `rate_bps`, in ms (arrays work)."""
  if not rate_bps > 0:
    raise ValueError(f"rate_bps {rate_bps} is not allowed; it must be > 0")
  return bits / rate_bps * 1e3


def channel_table(budgets, bits_per_unit, rates=None) -> list:
  """One row per budget K: dict(budget, bits, latency_ms_<channel> for each rate).

  rates: {name: bits/s}; None means CHANNELS.
  """
  rates = CHANNELS if rates is None else rates
  rows = []
  for k in budgets:
    bits = int(k) * bits_per_unit
    row = dict(budget=int(k), bits=bits)
    row.update({f"latency_ms_{name}": latency_ms(bits, r) for name, r in rates.items()})
    rows.append(row)
  return rows


def parse_rates(spec: str) -> dict:
  """'name=bits_per_s,...' -> {name: rate}; '' -> CHANNELS."""
  if not spec:
    return dict(CHANNELS)
  rates = {}
  for item in spec.split(","):
    name, _, value = item.partition("=")
    try:
      rates[name.strip()] = float(value)
    except ValueError:
      raise ValueError(f"report.rates item {item!r} is not name=bits_per_second") from None
    if not rates[name.strip()] > 0:
      raise ValueError(f"report.rates item {item!r}: the rate must be > 0 bits/s")
  return rates
