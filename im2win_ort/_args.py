"""Checks of the numbers and names given to the commands (rewrite, compare, triton-config, models'
export): each returns the value or raises ArgumentError, one line that names the option and the
value, so that a command refuses before it reads or writes anything. Bounds come from where the
value goes (Triton's int32 fields, poll()'s millisecond timeout, a file name's 255 bytes), not
from taste."""

from __future__ import annotations

import math
import re

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# subprocess waits through poll(), whose timeout is an int of milliseconds: about 24.8 days at most.
MAX_TIMEOUT_S = INT32_MAX // 1000
# A name becomes a directory, which mkdtemp stages as ".NAME.old.XXXXXXXX" (14 more characters):
# 200 keeps that within the 255 bytes a file name may have on Linux and macOS.
MAX_NAME = 200
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class ArgumentError(ValueError):
    """A command-line value out of range; the message is the whole one-line explanation."""


def _shown(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def one_line(message) -> str:
    """`message` as one line: characters that are not printable (a newline in a name the user
    gave) shown escaped, as repr shows them."""
    text = str(message)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def number(value, option: str, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None) -> float:
    """A finite float within the bounds (minimum inclusive, above exclusive, maximum inclusive)."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ArgumentError(f"{option} takes a number, got {_shown(value)}") from None
    if not math.isfinite(x):
        raise ArgumentError(f"{option} takes a finite number, got {_shown(value)}")
    if minimum is not None and x < minimum:
        raise ArgumentError(f"{option} must be at least {minimum:g}, got {_shown(value)}")
    if above is not None and not x > above:
        raise ArgumentError(f"{option} must be greater than {above:g}, got {_shown(value)}")
    if maximum is not None and x > maximum:
        raise ArgumentError(f"{option} must be at most {maximum:g}, got {_shown(value)}")
    return x


def integer(value, option: str, *, minimum: int | None = None, maximum: int = INT64_MAX) -> int:
    """An int within [minimum, maximum]; strings are parsed as ASCII decimal integers."""
    if isinstance(value, bool) or not isinstance(value, int):
        text = str(value).strip()
        if not re.fullmatch(r"[+-]?[0-9]+", text):  # int() would take '١٢' and '1_000' too
            raise ArgumentError(f"{option} takes an integer, got {_shown(value)}")
        value = int(text)
    if minimum is not None and value < minimum:
        raise ArgumentError(f"{option} must be at least {minimum}, got {_shown(value)}")
    if value > maximum:
        raise ArgumentError(f"{option} must be at most {maximum}, got {_shown(value)}")
    return value


def integers(text, option: str, *, minimum: int = 1, maximum: int = INT32_MAX) -> list[int]:
    """Comma-separated integers within [minimum, maximum], duplicates dropped, in the order given."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or not all(re.fullmatch(r"[0-9]+", p) for p in parts) or min(int(p) for p in parts) < minimum:
        kind = "positive integers" if minimum == 1 else f"integers >= {minimum}"
        raise ArgumentError(f"{option} takes comma-separated {kind}, got {_shown(text)}")
    values = [int(p) for p in parts]
    too_large = [v for v in values if v > maximum]
    if too_large:
        raise ArgumentError(f"{option} {too_large[0]}: at most {maximum}")
    return list(dict.fromkeys(values))


def name(value: str, option: str) -> str:
    """A name that is safe as one directory name: ASCII letters, digits, '_', '.', '-', not
    starting with '.' or '-', at most MAX_NAME characters. fullmatch: '$' would let a final
    newline through."""
    if len(value) > MAX_NAME:
        raise ArgumentError(f"{option} {_shown(value)}: at most {MAX_NAME} characters")
    if not _NAME.fullmatch(value):
        raise ArgumentError(f"{option} {_shown(value)}: use letters, digits, '_', '.', '-' "
                            f"(not starting with '.' or '-')")
    return value
