"""Seeds derived from names: one run's levels, modes and members each get their own stream,
the same in every process and on every machine (Python's ``hash`` is salted per process,
so it cannot serve)."""


def derive_seed(*parts) -> int:
    """A 63-bit seed from a tuple of ints and strings, stable across processes."""
    text = "/".join(str(p) for p in parts)
    value = 1469598103934665603
    for byte in text.encode():
        value = ((value ^ byte) * 1099511628211) % (1 << 63)
    return value
