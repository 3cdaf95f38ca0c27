"""Per-input noise streams that never collide in practice.

Input ``index`` of a run seeded with ``seed`` draws its noise from
:func:`noise_generator` ``(seed, index, device)``.  ``torch.Generator.manual_seed``
is not enough on the CPU: its Mersenne Twister keeps only the low 32 bits of
the seed, so seeds ``s`` and ``s + 2**32`` give the same noise and about
``N**2 / 2**33`` pairs of ``N`` inputs would share a stream.  The CPU
generator's whole 19,968-bit state is therefore filled from a
``numpy.random.SeedSequence`` of a fixed-width encoding of ``(seed, index)``;
other devices (CUDA's Philox) use the full 64-bit seed, so
``manual_seed(noise_seed(seed, index))`` suffices.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DeqcertError, OptionError

_WORDS = 624  # Mersenne Twister state words
_STATE_AT = 24  # byte offset of the words in torch's CPU generator state (checked below)


def _entropy(seed: int, index: int) -> list[int]:
    """``(seed, index)`` as four 32-bit words, a fixed-width (so injective) encoding.

    ``SeedSequence([seed, index])`` is not injective: it splits large integers
    into 32-bit words and pads with zeros, so ``[2**32, 0]`` and ``[0, 1]``
    give the same state.
    """
    if not (0 <= seed < 2**64 and 0 <= index < 2**64):
        raise OptionError(
            f"seed and index must be integers in [0, 2**64), got seed={seed}, index={index}"
        )
    mask = 2**32 - 1
    return [seed & mask, seed >> 32, index & mask, index >> 32]


def noise_seed(seed: int, index: int) -> int:
    """The 63-bit seed of input ``index``'s noise in a run seeded with ``seed``.

    ``numpy.random.SeedSequence([seed % 2**32, seed >> 32, index % 2**32,
    index >> 32]).generate_state(1, numpy.uint64)[0]`` with the top bit
    cleared.  SeedSequence hashes its entropy, so neighbouring pairs give
    unrelated values.  Recorded as the generator's ``initial_seed()``; on the
    CPU it does not alone define the stream (see :func:`noise_generator`).
    """
    state = np.random.SeedSequence(_entropy(int(seed), int(index))).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)


def noise_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of input ``index``'s noise in a run seeded with ``seed``, on ``device``.

    CPU: the 624 state words are ``generate_state(624, uint32)`` of the same
    SeedSequence as :func:`noise_seed` (the first word's top bit set, so the
    state is never degenerate), so two distinct pairs share a stream only if
    SeedSequence's 19,968-bit outputs coincide.  Other devices:
    ``manual_seed(noise_seed(seed, index))``.
    """
    key = noise_seed(seed, index)
    dev = torch.device(device)
    generator = torch.Generator(device=dev)
    if dev.type != "cpu":
        return generator.manual_seed(key)
    words = np.random.SeedSequence(_entropy(int(seed), int(index))).generate_state(
        _WORDS, np.uint32
    )
    words[0] |= np.uint32(0x80000000)
    state = _cpu_state_template(generator)
    state[:8] = np.frombuffer(np.uint64(key).tobytes(), np.uint8)  # the_initial_seed
    state[8:16] = np.frombuffer(np.array([1, 1], np.int32).tobytes(), np.uint8)  # left, seeded
    state[16:24] = 0  # next
    state[_STATE_AT : _STATE_AT + 8 * _WORDS] = np.frombuffer(
        words.astype(np.uint64).tobytes(), np.uint8
    )
    generator.set_state(torch.from_numpy(state))
    return generator


def _cpu_state_template(generator: torch.Generator) -> np.ndarray:
    """A freshly seeded CPU generator's state bytes, after checking their layout.

    The words must sit where :data:`_STATE_AT` says: seeded with 5, they are
    the Mersenne Twister's standard initialisation from 5.
    """
    generator.manual_seed(5)
    state = generator.get_state().numpy().copy()
    words = [5]
    for i in range(1, _WORDS):
        words.append((1812433253 * (words[-1] ^ (words[-1] >> 30)) + i) & 0xFFFFFFFF)
    found = (
        state[_STATE_AT : _STATE_AT + 8 * _WORDS].view(np.uint64) if state.size >= 5016 else None
    )
    if found is None or not np.array_equal(found, np.array(words, np.uint64)):
        raise DeqcertError(
            f"this torch version ({torch.__version__}) lays out its CPU generator state "
            "differently; deqcert cannot derive collision-free noise streams on it"
        )
    return state
