"""Numbers -> fixed-width CSV text, vectorised with numpy (no per-value Python formatting).

Every value becomes a *cell* of 8 or 16 bytes, its last byte the separator that follows it,
held as little-endian ``uint64`` words; a block of CSV lines is a ``(rows, words)`` array
of cells side by side, written with one ``tobytes()``.

- a float32 is ``±DDDDDDDDDE±XXX`` + separator (16 bytes): nine significant digits, which
  Java's ``Float.parseFloat`` reads back to the very same float32;
- a non-negative integer is zero-padded to 7 (8-byte cell) or 15 digits (16-byte cell).
"""

from __future__ import annotations

import numpy as np

__all__ = ["float32_cells", "float32_words", "int_cells", "text_cell", "with_separator"]

_WORD_DIGITS = {1: 7, 2: 15}  # digits that fit in a cell of that many words, separator included
_ASCII_ZEROS = np.uint64(0x3030303030303030)


def _pack(columns: list[np.ndarray], first_byte: int = 0) -> np.ndarray:
    """Byte values (uint64 arrays, each < 256) -> one uint64 word, column k at byte first_byte + k."""
    word = np.zeros(np.shape(columns[0]), dtype=np.uint64)
    for k, col in enumerate(columns):
        word |= col.astype(np.uint64) << np.uint64(8 * (first_byte + k))
    return word


def _digits(values: np.ndarray, count: int) -> list[np.ndarray]:
    """The ``count`` lowest decimal digits of non-negative integers, most significant first."""
    rest = values.astype(np.uint64, copy=True)
    out = []
    ten = np.uint64(10)
    for _ in range(count):
        rest, digit = np.divmod(rest, ten)
        out.append(digit)
    return out[::-1]


def with_separator(cells: np.ndarray, sep: str) -> np.ndarray:
    """Replace the separator byte of each cell (the last byte of its last word) in place."""
    last = cells[..., -1]
    last &= np.uint64(0x00FFFFFFFFFFFFFF)
    last |= np.uint64(ord(sep)) << np.uint64(56)
    return cells


def int_cells(values: np.ndarray, words: int, sep: str = ",") -> np.ndarray:
    """Non-negative integers -> (n, words) cells of zero-padded digits and ``sep``."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    digits = _WORD_DIGITS[words]
    if values.size and (values.min() < 0 or values.max() >= 10**digits):
        raise ValueError(f"int_cells takes integers in [0, 1e{digits})")
    out = np.empty((len(values), words), dtype=np.uint64)
    ds = _digits(values, digits)
    for w in range(words):
        chunk = ds[8 * w:8 * w + 8]
        out[:, w] = _pack(chunk) + (_ASCII_ZEROS if len(chunk) == 8 else np.uint64(0x0030303030303030))
    return with_separator(out, sep)


def text_cell(text: str, words: int, n: int) -> np.ndarray:
    """The same ``words * 8`` bytes of text on ``n`` rows (text padded on the left with '0')."""
    raw = text.rjust(8 * words, "0").encode()
    if len(raw) != 8 * words:
        raise ValueError(f"{text!r} does not fit in {words} words")
    return np.broadcast_to(np.frombuffer(raw, dtype="<u8"), (n, words))


# exponent field: 'E', sign, three digits, separator placeholder (bytes 2..7 of the second word)
_EXPONENTS = np.arange(-99, 100)
_EXP_WORDS = _pack(
    [np.full(len(_EXPONENTS), ord("E")), np.where(_EXPONENTS < 0, ord("-"), ord("+")),
     *[d + ord("0") for d in _digits(np.abs(_EXPONENTS), 3)]],
    first_byte=2,
)
_POW10 = 10.0 ** np.arange(-60, 61)  # _POW10[k + 60] = 10**k


_CHUNK = 1 << 16  # values per step: temporaries stay in cache instead of faulting in fresh pages


def float32_cells(values: np.ndarray, sep: str = ",") -> np.ndarray:
    """Float32 values -> (n, 2) cells ``±DDDDDDDDDE±XXX`` + ``sep``; NaN or inf is refused."""
    f = np.asarray(values, dtype=np.float32).reshape(-1)
    out = np.empty((len(f), 2), dtype=np.uint64)
    float32_words(f, out[:, 0], out[:, 1], sep)
    return out


def float32_words(values: np.ndarray, high: np.ndarray, low: np.ndarray, sep: str = ",") -> None:
    """Write the two words of each value's cell into ``high`` and ``low`` (arrays or strided
    views of ``values``' shape), so callers place cells straight into their line buffer."""
    f = np.asarray(values, dtype=np.float32)
    if not np.isfinite(f).all():
        raise ValueError("cannot write NaN or infinite values")
    rows = max(1, _CHUNK // max(1, f[0].size if f.ndim > 1 and len(f) else 1))
    for start in range(0, len(f), rows):
        part = slice(start, start + rows)
        high[part], low[part] = _float32_chunk(f[part])
    with_separator(low[..., None], sep)


def _float32_chunk(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(f).astype(np.float64)
    zero = a == 0
    _, e2 = np.frexp(a)
    e10 = np.floor((e2.astype(np.float64) - 1) * np.log10(2.0)).astype(np.int64)  # low by at most one
    e10 += (a >= _POW10[np.clip(e10 + 61, 0, 120)]).astype(np.int64)
    e10[zero] = 8
    mant = np.floor(a * _POW10[np.clip(68 - e10, 0, 120)] + 0.5).astype(np.uint64)  # nine digits
    over = mant >= np.uint64(10**9)  # rounded up to the next power of ten
    mant[over] //= np.uint64(10)
    e10 += over.astype(np.int64)
    d = _digits(mant, 9)
    sign = np.where(f < 0, ord("-"), ord("+")).astype(np.uint64)
    high = _pack([sign, *[x + np.uint64(ord("0")) for x in d[:7]]])
    low = _pack([x + np.uint64(ord("0")) for x in d[7:]]) | _EXP_WORDS[e10 - 8 + 99]
    return high, low
