"""Whether two final answers of math solutions agree (`answers_match`), after normalisation by
prefdata.train.answers (whose docstring lists the equivalences: numbers, tuples, intervals,
sets, matrices, equations, sympy expressions) and the safety limits of the sympy step."""

from __future__ import annotations

import functools
import math
import re
from typing import Any

from prefdata.train.answers import braced_group, normalize_answer, to_number

__all__ = ["answers_match"]

# ---- structure: lists, intervals, matrices ---------------------------------------------

_OPEN = "([{"
_CLOSE = ")]}"


def _split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets and braces."""
    parts: list[str] = []
    depth = 0
    current = ""
    i = 0
    while i < len(s):
        char = s[i]
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append(current)
            current = ""
            i += len(sep)
            continue
        current += char
        i += 1
    parts.append(current)
    return parts


def _bracketed(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when `s` is one bracket group like "(a,b]" or "[a,b)"."""
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return None
    depth = 0
    for i, char in enumerate(s):
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return None  # "(1,2)\cup(3,4)" or "(a)(b)": not one group
    return s[0], s[1:-1], s[-1]


_MATRIX = re.compile(r"^\\begin\{([pbvB]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$")


def _matrix(s: str) -> list[list[str]] | None:
    match = _MATRIX.match(s)
    if match is None:
        return None
    rows = [r for r in match.group(2).split("\\\\")]
    return [r.split("&") for r in rows if r != ""]


def _expand_pm(s: str) -> list[str] | None:
    """ "a\\pmb" -> ["a+b", "a-b"] (only one \\pm, at top level)."""
    if s.count("\\pm") != 1 and s.count("\\mp") != 1:
        return None
    token = "\\pm" if "\\pm" in s else "\\mp"
    left, right = s.split(token, 1)
    if not right:
        return None
    signs = ("+", "-") if token == "\\pm" else ("-", "+")
    return [f"{left}{signs[0]}({right})", f"{left}{signs[1]}({right})"]


# ---- sympy ---------------------------------------------------------------------------

_FUNCTIONS = {
    "\\sin": "sin",
    "\\cos": "cos",
    "\\tan": "tan",
    "\\cot": "cot",
    "\\sec": "sec",
    "\\csc": "csc",
    "\\arcsin": "asin",
    "\\arccos": "acos",
    "\\arctan": "atan",
    "\\ln": "log",
    "\\log": "log",
    "\\exp": "exp",
}
_ALLOWED_NAMES = {
    "sqrt",
    "pi",
    "oo",
    "I",
    "E",
    "sin",
    "cos",
    "tan",
    "cot",
    "sec",
    "csc",
    "asin",
    "acos",
    "atan",
    "log",
    "exp",
}
_MAX_EXPRESSION = 200


def _latex_to_python(s: str) -> str | None:
    """A sympy-parsable string from normalised LaTeX, or None when it has anything else."""
    out = s
    # \frac{a}{b} and \sqrt[n]{a} / \sqrt{a}, innermost first by repeated passes.
    for _ in range(20):
        match = re.search(r"\\frac(?=\{)|\\sqrt(?=[\[{])", out)
        if match is None:
            break
        start = match.end()
        if match.group(0) == "\\frac":
            num = braced_group(out, start)
            if num is None:
                return None
            den = braced_group(out, num[1])
            if den is None:
                return None
            out = out[: match.start()] + f"(({num[0]})/({den[0]}))" + out[den[1] :]
        else:
            index = None
            if out[start] == "[":
                close = out.find("]", start)
                if close < 0:
                    return None
                index = out[start + 1 : close]
                start = close + 1
            arg = braced_group(out, start)
            if arg is None:
                return None
            body = f"sqrt({arg[0]})" if index is None else f"(({arg[0]})**(1/({index})))"
            out = out[: match.start()] + body + out[arg[1] :]
    else:
        return None
    for latex, name in _FUNCTIONS.items():
        out = out.replace(latex, name)
    out = (
        out.replace("\\pi", "pi")
        .replace("\\infty", "oo")
        .replace("\\cdot", "*")
        .replace("\\times", "*")
        .replace("\\div", "/")
        .replace("{", "(")
        .replace("}", ")")
        .replace("^", "**")
    )
    if "\\" in out or len(out) > _MAX_EXPRESSION or not out:
        return None
    if not re.fullmatch(r"[0-9A-Za-z+\-*/().]*", out):
        return None
    # A run of letters is a whitelisted name (sqrt, pi, sin, ...) or a product of one-letter
    # symbols ("xy" -> x*y): no other name ever reaches sympy's eval.
    out = re.sub(
        r"[A-Za-z]+",
        lambda m: m.group(0) if m.group(0) in _ALLOWED_NAMES else "*".join(m.group(0)),
        out,
    )
    # No exponent towers (9**9**9 would never finish) and no huge literal exponents.
    if re.search(r"\*\*\(?[\d.]+\)?\*\*|\*\*\([^()]*\*\*", out):
        return None
    if any(float(e) > 10_000 for e in re.findall(r"\*\*\(?([0-9.]+)", out) if e != "."):
        return None
    return out


@functools.lru_cache(maxsize=16384)
def _sympify(s: str) -> Any:
    """A sympy expression for a normalised answer, or None."""
    text = _latex_to_python(s)
    if text is None:
        return None
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    names: dict[str, Any] = {"i": sympy.I, "e": sympy.E, "pi": sympy.pi, "oo": sympy.oo}
    for name in _ALLOWED_NAMES - set(names):
        names[name] = getattr(sympy, name)
    for letter in set(re.findall(r"[A-Za-z]+", text)) - set(names):
        names[letter] = sympy.Symbol(letter)  # single letters only (see _latex_to_python)
    restricted = {
        "Integer": sympy.Integer,
        "Float": sympy.Float,
        "Rational": sympy.Rational,
        "Symbol": sympy.Symbol,
    }
    try:
        return parse_expr(
            text,
            local_dict=names,
            global_dict=restricted,
            transformations=(
                *standard_transformations,
                implicit_multiplication_application,
                convert_xor,
            ),
            evaluate=True,
        )
    except Exception:  # any parse failure just means "not an expression"
        return None


_POINTS = (0.3719, 1.2247, 2.7183, -0.8541)


def _numeric(expr: Any, point: dict[Any, float]) -> complex | None:
    try:
        value = complex(expr.evalf(30, subs=point))
    except Exception:  # symbols left, oo, zoo: not comparable numerically
        return None
    if math.isnan(value.real) or math.isnan(value.imag):
        return None
    return value


def _close(a: complex, b: complex) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))


def _sympy_equal(a: str, b: str) -> bool:
    x, y = _sympify(a), _sympify(b)
    if x is None or y is None:
        return False
    try:
        if x == y:
            return True
        if x.has(*_infinities()) or y.has(*_infinities()):
            return False
        symbols = sorted(x.free_symbols | y.free_symbols, key=str)
        points = (
            [{}]
            if not symbols
            else [
                {s: _POINTS[(i + k) % len(_POINTS)] for i, s in enumerate(symbols)}
                for k in range(3)
            ]
        )
        for point in points:
            vx, vy = _numeric(x, point), _numeric(y, point)
            if vx is None or vy is None or not _close(vx, vy):
                return False
        return True  # noqa: TRY300 (the whole check is what may raise)
    except Exception:  # sympy can raise on odd input; unequal then
        return False


@functools.cache
def _infinities() -> tuple[Any, ...]:
    import sympy

    return (sympy.oo, sympy.zoo, sympy.nan)


def _equations_equal(a: str, b: str) -> bool:
    """a: "l1=r1", b: "l2=r2": the same equation when l1-r1 and l2-r2 are proportional."""
    l1, r1 = a.split("=", 1)
    l2, r2 = b.split("=", 1)
    if l1 == l2 and _atoms_equal(r1, r2):
        return True
    d1 = _sympify(f"({l1})-({r1})")
    d2 = _sympify(f"({l2})-({r2})")
    if d1 is None or d2 is None:
        return False
    symbols = sorted(d1.free_symbols | d2.free_symbols, key=str)
    ratios: list[complex] = []
    for k in range(3):
        point = {s: _POINTS[(i + k) % len(_POINTS)] for i, s in enumerate(symbols)}
        v1, v2 = _numeric(d1, point), _numeric(d2, point)
        if v1 is None or v2 is None:
            return False
        if abs(v2) < 1e-12:
            if abs(v1) > 1e-9:
                return False
            continue
        ratios.append(v1 / v2)
    return bool(ratios) and all(_close(r, ratios[0]) for r in ratios) and abs(ratios[0]) > 1e-12


# ---- comparison ----------------------------------------------------------------------

_CHOICE = re.compile(r"^\(?([A-Ea-e])\)?$")


def _atoms_equal(a: str, b: str) -> bool:
    """Two normalised single answers (no top-level lists)."""
    if a == b:
        return True
    if a.isalpha() and b.isalpha():
        return a.lower() == b.lower()
    ca, cb = _CHOICE.match(a), _CHOICE.match(b)
    if ca and cb:
        return ca.group(1).upper() == cb.group(1).upper()
    na, nb = to_number(a), to_number(b)
    if na is not None and nb is not None:
        if na == nb:
            return True
        return math.isclose(float(na), float(nb), rel_tol=1e-9, abs_tol=1e-12)
    if a.count("=") == 1 and b.count("=") == 1:
        return _equations_equal(a, b)
    if "=" in a or "=" in b:
        return False
    return _sympy_equal(a, b)


def _set_equal(xs: list[str], ys: list[str]) -> bool:
    if len(xs) != len(ys):
        return False
    left = list(ys)
    for x in xs:
        for j, y in enumerate(left):
            if _equal(x, y):
                del left[j]
                break
        else:
            return False
    return True


def _strip_assignment(s: str) -> str:
    match = re.match(r"^[a-zA-Z](?:_\{?\w+\}?)?=(?!=)", s)
    return s[match.end() :] if match else s


def _equal(a: str, b: str, depth: int = 0) -> bool:
    if a == b:
        return True
    if depth > 6:
        return False
    # One side "x=5", the other "5".
    if ("=" in a) != ("=" in b):
        a2, b2 = _strip_assignment(a), _strip_assignment(b)
        if (a2, b2) != (a, b) and "=" not in a2 and "=" not in b2:
            return _equal(a2, b2, depth + 1)
    ma, mb = _matrix(a), _matrix(b)
    if ma is not None or mb is not None:
        if ma is None or mb is None or [len(r) for r in ma] != [len(r) for r in mb]:
            return False
        return all(
            _equal(x, y, depth + 1)
            for ra, rb in zip(ma, mb, strict=True)
            for x, y in zip(ra, rb, strict=True)
        )
    ua, ub = _split_top(a, "\\cup"), _split_top(b, "\\cup")
    if len(ua) > 1 or len(ub) > 1:
        return len(ua) == len(ub) and all(
            _equal(x, y, depth + 1) for x, y in zip(ua, ub, strict=True)
        )
    ga, gb = _bracketed(a), _bracketed(b)
    la, lb = _split_top(a, ","), _split_top(b, ",")
    if ga is not None and gb is not None:
        ia, ib = _split_top(ga[1], ","), _split_top(gb[1], ",")
        if len(ia) > 1 or len(ib) > 1:
            # Tuples and intervals: same brackets, element by element.
            return (
                (ga[0], ga[2]) == (gb[0], gb[2])
                and len(ia) == len(ib)
                and all(_equal(x, y, depth + 1) for x, y in zip(ia, ib, strict=True))
            )
    # Bare lists are sets; "a \\pm b" counts as its two values.
    ea = [v for x in la for v in (_expand_pm(x) or [x])]
    eb = [v for x in lb for v in (_expand_pm(x) or [x])]
    if len(ea) > 1 or len(eb) > 1:
        return _set_equal(ea, eb)
    return _atoms_equal(a, b)


def answers_match(candidate: str | None, reference: str) -> bool:
    """Whether `candidate` states the same answer as `reference` (see the module doc).

    Both are answers, not solutions: extract a solution's answer with `extract_answer`.
    """
    if candidate is None:
        return False
    a, b = normalize_answer(candidate), normalize_answer(reference)
    if not a or not b:
        return False
    if a == b:
        return True
    # Set braces were dropped; a bare comma list is a set on both sides.
    return _equal(a, b)
