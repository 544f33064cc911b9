"""The config checks' one-line errors: each names the value and what is allowed."""


def require(ok: bool, name: str, value, allowed: str):
  if not ok:
    raise ValueError(f"{name} {value!r} is not allowed; {allowed}")


def items(value, what) -> list:
  """'a,b' (or a sequence) -> its items; empty is refused."""
  out = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
  out = [v for v in out if v != ""]
  if not out:
    raise ValueError(f"{what} is empty; give at least one")
  return out


def once(values: list, what: str, value) -> list:
  repeated = sorted({v for v in values if values.count(v) > 1})
  if repeated:
    raise ValueError(f"{what} {value!r} repeats {repeated}; give each once")
  return values


def number(text, what: str, value) -> float:
  try:
    return float(text)
  except (TypeError, ValueError):
    raise ValueError(f"{what} {value!r}: {text!r} is not a number") from None


def numbers(value, what) -> list:
  return once([number(x, what, value) for x in items(value, what)], what, value)
