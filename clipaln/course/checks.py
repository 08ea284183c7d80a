"""What the exercises' otter tests call, in the student's kernel: one sentence for each wrong answer.

An exercise's answer is a dict of named values (`answer_1 = {"kl_lam1": ..., ...}`), or for 01.5 a
function. The public check (the student runs it) reads the form: every key, no `...` left, numbers
where numbers are wanted, fractions as fractions. The hidden check (the lecturer's) compares each value
with the reference the worked solution computed, and names the typical mistakes it recognises.
"""

from __future__ import annotations

import fnmatch
import math
import sys
from collections.abc import Callable

from ..loss_check import check_against
from ..losses import dpo

#: Typical wrong answers, by exercise: (keys, what the wrong answer gives from the reference, the sentence).
MISTAKES: dict[str, list[tuple[str, Callable[[float], float], str]]] = {
    "01.2": [("target_beta_*", lambda ref: 2 * ref, "IPO's target margin is 1/(2 beta), not 1/beta")],
    "03.2": [
        ("span_*", lambda ref: ref**0.25, "the span of S^-4 is (S_max / S_min) to the fourth power, not the ratio"),
        ("span_*", lambda ref: ref**0.5, "the span of S^-4 is (S_max / S_min) to the fourth power, not the square"),
    ],
}
#: The words a free-text answer chooses among, by key: the stub lists them and the public check holds
#: the answer to them, so that a right reading never fails on its wording.
CHOICES: dict[str, tuple[str, ...]] = {
    "copes_best": ("dpo", "ipo", "kto"),
    "degrades_least": ("dpo", "ipo", "kto"),
    "mostly": ("words", "styles"),
    "suffers": ("objects", "activities"),
    "smaller_kl": ("dpo", "ce"),
}
#: Keys compared with their own tolerance (absolute), where the default (2 points of a fraction, 5% else) is wrong.
TOLERANCE = {
    "crossing_*": 0.05,
    "w0_cosine_error": 1e-5,
    "cosine*": 0.02,
    "t_star_*": 0.05,
    "fgsm_*": 0.05,  # 07 trains the image encoder: CPU kernels move its numbers by a few images between runs
    "crosses_*": 1.0,
}


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def shape_of(reference: dict) -> dict[str, str]:
    """The form of an answer: each key and the kind of value it wants ("number", "bool", "str", "list")."""
    return {key: _kind(value) for key, value in reference.items()}


def _answer(env: dict, name: str):
    if name not in env:
        why = f"`{name}` is not defined: run your exercise cell, which ends by setting it"
        raised = getattr(sys, "last_value", None)  # IPython keeps the last error a cell raised
        if isinstance(raised, KeyboardInterrupt):  # the grader's time limit, or the student's own stop
            why += " (a cell was interrupted: it ran past the grader's time limit, or was stopped by hand)"
        elif raised is not None:  # not necessarily this exercise's cell's, and perhaps fixed since
            why += f" (the last error this kernel saw: {type(raised).__name__}: {' '.join(str(raised).split())})"
        raise AssertionError(why)
    value = env[name]
    if value is Ellipsis:
        raise AssertionError(f"`{name}` is still `...`: replace it with your answer")
    return value


def check_form(env: dict, name: str, shape: dict[str, str]) -> None:
    """The public check: `name` is a dict with exactly these keys, each filled with the kind of value wanted."""
    answer = _answer(env, name)
    if not isinstance(answer, dict):
        raise AssertionError(f"`{name}` should be a dict with the keys {sorted(shape)}, not a {type(answer).__name__}")
    missing, extra = sorted(set(shape) - set(answer)), sorted(set(answer) - set(shape))
    if missing or extra:
        raise AssertionError(f"`{name}` lacks the keys {missing} and has keys it should not: {extra}")
    for key, kind in shape.items():
        value = answer[key]
        if value is Ellipsis:
            raise AssertionError(f"`{name}[{key!r}]` is still `...`: replace it with the value your code printed")
        if hasattr(value, "item") and not isinstance(value, list):  # a 0-d tensor or numpy scalar
            value = value.item()
        if _kind(value) != kind:  # True is not the number 1.0 an answer wants
            raise AssertionError(f"`{name}[{key!r}]` should be a {kind}, not {type(value).__name__} {value!r}")
        if kind == "number" and not math.isfinite(value):
            raise AssertionError(f"`{name}[{key!r}]` is {value}: a finite number is wanted")
        if kind == "str" and key in CHOICES and value.strip().lower() not in CHOICES[key]:
            words = ", ".join(repr(c) for c in CHOICES[key])
            raise AssertionError(f"`{name}[{key!r}]` should be one of {words}, not {value!r}")


def _tolerance(key: str, ref: float) -> float:
    for pattern, tol in TOLERANCE.items():
        if fnmatch.fnmatch(key, pattern):
            return tol
    return 0.02 if 0.0 <= ref <= 1.0 else 0.05 * abs(ref)


def check_values(env: dict, name: str, exercise: str, reference: dict) -> None:
    """The hidden check: every value within tolerance of the worked solution's, typical mistakes named."""
    check_form(env, name, shape_of(reference))
    answer = env[name]
    for key, ref in reference.items():
        value = answer[key]
        value = value.item() if hasattr(value, "item") and not isinstance(value, list) else value
        if isinstance(ref, bool) or isinstance(ref, str):
            if str(value).strip().lower() != str(ref).lower():
                raise AssertionError(f"`{name}[{key!r}]` is {value!r}: re-read what your numbers show")
            continue
        if isinstance(ref, list):
            if list(value) != ref:
                raise AssertionError(
                    f"`{name}[{key!r}]` is {list(value)}, which is not what the exercise's setting gives"
                )
            continue
        if abs(value - ref) <= _tolerance(key, ref):
            continue
        for pattern, wrong, sentence in MISTAKES.get(exercise, []):
            if fnmatch.fnmatch(key, pattern) and math.isclose(value, wrong(ref), rel_tol=0.02):
                raise AssertionError(f"`{name}[{key!r}]`: {sentence}")
        if 0.0 <= ref <= 1.0 and abs(value / 100 - ref) <= _tolerance(key, ref):
            raise AssertionError(f"`{name}[{key!r}]` is a percentage: give the fraction, in [0, 1]")
        raise AssertionError(
            f"`{name}[{key!r}]` = {value:.4g} is off: check the setting the exercise and its hint name"
        )


def check_loss(env: dict, name: str) -> None:
    """01.5: the student's per-sample DPO loss against clipaln's, at three betas, values and gradients."""
    fn = _answer(env, name)
    if not callable(fn):
        raise AssertionError(f"`{name}` should be your loss function (`{name} = my_dpo`), not a {type(fn).__name__}")
    check_against(fn, dpo)


def _letter(value):
    """A quiz answer as a lowercase letter where it reads as one ("D ", "(d)", "d." -> "d")."""
    return value.strip().strip("().").strip().lower() if isinstance(value, str) else value


def check_quiz(env: dict, name: str, options: dict[str, int]) -> None:
    """A quiz's public check: one letter per question, among that question's options."""
    answer = _answer(env, name)
    if not isinstance(answer, dict) or sorted(map(str, answer)) != sorted(options):
        raise AssertionError(f"`{name}` should map each question number {sorted(map(int, options))} to a letter")
    for q, n in options.items():
        letter = answer.get(int(q), answer.get(q))
        allowed = "abcdefgh"[:n]
        if letter is Ellipsis:
            raise AssertionError(f"quiz question {q} is still `...`: answer one of the letters {', '.join(allowed)}")
        if not (isinstance(letter, str) and len(_letter(letter)) == 1 and _letter(letter) in allowed):
            raise AssertionError(f"quiz question {q}: answer one of the letters {', '.join(allowed)}, not {letter!r}")


def check_quiz_answer(env: dict, name: str, question: str, right: str) -> None:
    """A quiz's hidden check, one per question."""
    answer = _answer(env, name)
    letter = answer.get(int(question), answer.get(question)) if isinstance(answer, dict) else None
    if not isinstance(letter, str) or _letter(letter) != right:
        raise AssertionError(f"quiz question {question}: {letter!r} is not the answer; the tutorial explains it")
