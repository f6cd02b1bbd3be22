"""Final answers of math solutions: extract them, normalise them, decide whether two agree.

    extract_answer("... so she makes $18 a day.\\n#### 18")     -> "18"
    answers_match("\\dfrac{3}{4}", "0.75")                       -> True
    answers_match("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac\\pi2)")  -> True

Used by the GRPO accuracy reward (prefdata.train.rewards) on GSM8K and MATH-500 style data;
pure Python plus sympy (installed with torch), no model.

Extraction (`extract_answer`), first that applies: the last `\\boxed{...}` / `\\fbox{...}`
(nested braces followed), the text after the last `####` (GSM8K), the last "final answer is X"
/ "the answer is X" / "Answer: X" / "A: X" phrase (to the end of its first sentence, outside
math and braces, or of its line; a leading number followed by words, "18 dollars", keeps the
number), and, unless turned off, the last number in the text ("1,000", "-3.5", "3/4").

Normalisation (`normalize_answer`): math delimiters ($, \\( \\), \\[ \\]), \\left / \\right and
LaTeX spacing (\\! \\, \\; \\quad ...), \\dfrac / \\tfrac -> \\frac, short forms \\frac12 and
\\sqrt2, degrees (^\\circ, °), dollar signs, percent signs, units in \\text{} / \\mbox{} after a
number ("864 \\mbox{ inches}^2" -> 864) and plain words after one ("18 dollars" -> 18),
\\text{X} -> X, thousands separators in a lone number
("10,\\!080", "58,500"), set braces \\{ \\}, every space, and a trailing period.

Equivalence (`answers_match`), after normalisation: equal strings (text case-insensitively,
"(B)" = "B"); equal numbers (fractions exact: 3/4 = 0.75 = \\frac{3}{4}; mixed numbers
"1\\frac{4}{5}" = 9/5; trailing ".0"); a single-variable assignment on one side only
("x=5" = "5"); "x \\in [a, b]" = "[a, b]"; tuples and intervals element by element with the same
brackets (so "(2, 5)" is not "[2, 5]"); bare comma lists and \\pm expansions as sets
("1 \\pm \\sqrt{19}" = "1-\\sqrt{19}, 1+\\sqrt{19}"); unions of intervals in order; matrices
element by element; equations when their sides' differences are proportional; otherwise sympy
expressions that evaluate to the same value (at a few fixed points when they have variables).

Safety: completions are model output. The LaTeX-to-sympy step only parses strings of
digits, operators, brackets and a whitelist of names (single letters, sqrt, pi, sin, ...),
at most 200 characters, without exponent towers, so sympy never evaluates arbitrary code or
an astronomically large power.
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction
from typing import Any

__all__ = [
    "answers_match",
    "extract_answer",
    "last_boxed",
    "normalize_answer",
    "to_number",
]

# ---- extraction ------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_GSM8K_FINAL = "####"
_PHRASE = re.compile(
    r"(?:final\s+answer\s*(?:is|:)|the\s+answer\s+is|\banswer\s*:|^\s*A\s*:)\s*:?\s*(.+)",
    re.IGNORECASE | re.MULTILINE,
)
_NUMBER_TOKEN = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_LEADING_NUMBER = re.compile(
    r"^\\?\$?\s*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?)\s*[A-Za-z%][A-Za-z\s.%]*$"
)


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at text[start] and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
            continue  # \{ and \} are literal braces, not grouping
        if char == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif char == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}) in `text`, or None.

    Nested braces are followed ("\\boxed{\\frac{1}{2}}" -> "\\frac{1}{2}"); "\\boxed 5" (no
    braces) gives "5".
    """
    matches = list(_BOXED.finditer(text))
    for match in reversed(matches):
        end = match.end()
        group = _braced(text, end)
        if group is not None:
            return group[0].strip()
        bare = re.match(r"[^\s$]+", text[end:])
        if bare and match.group(0).endswith(" "):
            return bare.group(0)
    return None


# A sentence end: . ! ? followed by whitespace or the end ("3.5" and "5!" inside math stay).
_SENTENCE_END = ".!?"
# Prose inside a "$...$" pair means the dollars were currency signs ("$18. Janet makes $18").
_PROSE = re.compile(r"[.!?]\s+[A-Z]")


def _math_close(text: str, start: int, token: str) -> int | None:
    """The index of the unescaped `token` closing the math span opened at text[start], or None
    when there is none or the span reads as prose."""
    i = start + len(token)
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(token, i):
            return None if _PROSE.search(text[start + len(token) : i]) else i
        i += 1
    return None


def _first_sentence(phrase: str) -> str:
    """`phrase` up to its first sentence end outside math ($...$, $$...$$, \\(...\\),
    \\[...\\]) and braces (\\boxed{...}), without the end mark: "42. Hope this helps!" -> "42"."""
    depth = 0
    close: str | None = None  # the delimiter that ends the math span we are in
    i = 0
    while i < len(phrase):
        char = phrase[i]
        if char == "\\":
            pair = phrase[i : i + 2]
            if close is None and pair in ("\\(", "\\["):
                close = "\\)" if pair == "\\(" else "\\]"
            elif pair == close:
                close = None
            i += 2  # also skips \$, \{ and \}: literal characters
            continue
        if char == "$":
            token = "$$" if phrase.startswith("$$", i) else "$"
            if close == token:
                close = None
            elif close is None and _math_close(phrase, i, token) is not None:
                close = token
            i += len(token)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(0, depth - 1)
        elif (
            char in _SENTENCE_END
            and depth == 0
            and close is None
            and (i + 1 == len(phrase) or phrase[i + 1].isspace())
        ):
            return phrase[:i]
        i += 1
    return phrase


def _clean_phrase(phrase: str) -> str:
    phrase = phrase.strip().replace("**", "").strip()
    phrase = _first_sentence(phrase).strip()
    dollars = re.findall(r"\$([^$]+)\$", phrase)
    if dollars:
        phrase = dollars[-1]
    phrase = phrase.strip().rstrip(".").strip()
    leading = _LEADING_NUMBER.match(phrase)
    if leading:
        return leading.group(1)
    return phrase


def extract_answer(text: str, *, fallback_last_number: bool = True) -> str | None:
    """The final answer in a solution text, or None (see the module doc for the order)."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    if _GSM8K_FINAL in text:
        final = text.rsplit(_GSM8K_FINAL, 1)[1].strip().splitlines()
        if final and final[0].strip():
            return _clean_phrase(final[0])
    phrases = list(_PHRASE.finditer(text))
    for match in reversed(phrases):
        phrase = _clean_phrase(match.group(1))
        if phrase:
            return phrase
    if fallback_last_number:
        numbers = _NUMBER_TOKEN.findall(text)
        if numbers:
            return numbers[-1]
    return None


# ---- normalisation ---------------------------------------------------------------------

_DROP = (
    r"\displaystyle",
    r"\left",
    r"\right",
    r"\bigl",
    r"\bigr",
    r"\Bigl",
    r"\Bigr",
    r"\big",
    r"\Big",
    r"\qquad",
    r"\quad",
    r"\!",
    r"\,",
    r"\;",
    r"\:",
    r"\ ",
    r"\$",
    r"\%",
)
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\\circ")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{")
_UNIT_AFTER_NUMBER = re.compile(
    r"(?<=[\d}.])\s*\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z\s.]*\}(?:\s*\^\s*\{?\d\}?)?"
)
_SHORT_FRAC = re.compile(r"\\frac\s*(\d|\\pi|[a-z])\s*(\d|\\pi|[a-z])")
_HALF_SHORT_FRAC_1 = re.compile(r"\\frac\s*(\{[^{}]*\})\s*(\d|[a-z])")
_HALF_SHORT_FRAC_2 = re.compile(r"\\frac\s*(\d|[a-z])\s*(\{)")
_SHORT_SQRT = re.compile(r"\\sqrt\s*(\d+|[a-z])")
# A lone number with thousands separators, maybe after "x=": "58,500", "x=10,080".
# "18 dollars", "5.4 cents", "3 apples each": a number, then only plain words (units).
_NUMBER_THEN_WORDS = re.compile(r"^\s*(-?\d[\d,]*(?:\.\d+)?)\s+(?:[A-Za-z]{2,}\.?\s*)+$")
_THOUSANDS = re.compile(r"^(?:[a-zA-Z]=)?(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?)$")
_LATEX_THOUSANDS = re.compile(r"(\d)\{,\}(\d{3})")


def _unwrap_text(s: str) -> str:
    """\\text{X} -> X (nested braces followed)."""
    while True:
        match = _TEXT_CMD.search(s)
        if match is None:
            return s
        group = _braced(s, match.end() - 1)
        if group is None:
            return s
        s = s[: match.start()] + group[0] + s[group[1] :]


@functools.lru_cache(maxsize=65536)
def normalize_answer(text: str) -> str:
    """A canonical string for an answer (see the module doc); no value is changed."""
    s = text.strip()
    for pair in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(pair[0]) and s.endswith(pair[1]):
            s = s[2:-2]
    s = s.replace("$", " ")
    # A LaTeX row break (\\) must survive the removal of "\ " (a LaTeX space) below.
    s = s.replace("\\\\", "\x00")
    s = _UNIT_AFTER_NUMBER.sub("", s)
    s = _DEGREES.sub("", s)
    for token in _DROP:
        s = s.replace(token, " ")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _unwrap_text(s)
    s = s.replace("\\{", "").replace("\\}", "")
    s = s.replace("%", "")
    s = _LATEX_THOUSANDS.sub(r"\1\2", s)
    words = _NUMBER_THEN_WORDS.match(s)
    if words:
        s = words.group(1)
    s = re.sub(r"\s+", "", s)
    s = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", s)
    s = _HALF_SHORT_FRAC_1.sub(r"\\frac\1{\2}", s)
    s = _HALF_SHORT_FRAC_2.sub(r"\\frac{\1}\2", s)
    s = _SHORT_SQRT.sub(r"\\sqrt{\1}", s)
    s = s.rstrip(".").replace("\x00", "\\\\")
    thousands = _THOUSANDS.match(s)
    if thousands:
        s = s[: thousands.start(1)] + thousands.group(1).replace(",", "")
    if s.startswith("\\in"):
        s = s[3:]
    s = re.sub(r"^[a-zA-Z]\\in", "", s)
    return s


# ---- numbers ---------------------------------------------------------------------------

_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_PLAIN_FRACTION = re.compile(r"^([+-]?\d+)/([+-]?\d+)$")
_LATEX_FRACTION = re.compile(r"^([+-]?)\\frac\{([+-]?\d+(?:\.\d+)?)\}\{([+-]?\d+(?:\.\d+)?)\}$")
_MIXED = re.compile(r"^([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")


def to_number(normalized: str) -> Fraction | None:
    """An exact number from a normalised answer ("-3", "0.75", "3/4", "\\frac{3}{4}",
    "1\\frac{4}{5}"), or None when it is not a plain number."""
    s = normalized
    try:
        if _PLAIN_NUMBER.match(s):
            return Fraction(s)
        match = _PLAIN_FRACTION.match(s)
        if match:
            return Fraction(int(match.group(1)), int(match.group(2)))
        match = _LATEX_FRACTION.match(s)
        if match:
            value = Fraction(match.group(2)) / Fraction(match.group(3))
            return -value if match.group(1) == "-" else value
        match = _MIXED.match(s)
        if match:
            value = int(match.group(2)) + Fraction(int(match.group(3)), int(match.group(4)))
            return -value if match.group(1) == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


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
            num = _braced(out, start)
            if num is None:
                return None
            den = _braced(out, num[1])
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
            arg = _braced(out, start)
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
        return True
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
