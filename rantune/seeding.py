"""Seeds derived from a run seed and a purpose: the one seed function of rantune.

Every random choice of a run (adapter init, local shuffling, client sampling, row
caps, attacks, seeded ``lora_A``, ...) draws from a generator seeded by
:func:`derive_seed` of the run seed and a purpose string, never from the call order,
so a resumed run draws the same numbers as an uninterrupted one and two purposes
never share a stream.

>>> derive_seed(0, "client-train", 1, 2) == derive_seed(0, "client-train", 1, 2)
True
"""

from __future__ import annotations

import numpy as np

Part = int | str | tuple | list


def _words(part: Part, out: list[int]) -> None:
    if isinstance(part, str):
        out.extend(part.encode())
    elif isinstance(part, tuple | list):
        for item in part:
            _words(item, out)
    elif isinstance(part, int | np.integer):  # bool is an int
        out.append(int(part) & 0xFFFFFFFF)
    else:
        raise TypeError(f"derive_seed takes ints, strings and tuples of them, not {part!r}")


def derive_seed(*parts: Part) -> int:
    """A 31-bit seed from any mix of ints, strings and tuples of them (order matters).

    Parameters
    ----------
    parts : the run seed, a purpose string and whatever distinguishes the draw
        (round, partition id, tensor key). Tuples are flattened; ints are taken
        modulo 2**32.

    Returns
    -------
    int
        In ``[0, 2**31)``: valid for numpy, torch and Python's ``random``.
    """
    words: list[int] = []
    _words(parts, words)
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)
