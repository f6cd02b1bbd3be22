"""Final answers of math solutions: extract them and normalise them (whether two agree:
prefdata.train.answer_match).

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
import re
from fractions import Fraction

__all__ = [
    "braced_group",
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


def braced_group(text: str, start: int) -> tuple[str, int] | None:
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
        group = braced_group(text, end)
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
        group = braced_group(s, match.end() - 1)
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
