"""Class labels checked before any image is decoded: a typo or a case variant never becomes a class.

A CSV line typed `PNUEMONIA` beside 1,300 `PNEUMONIA` lines, or a folder `normal` beside `NORMAL`,
would otherwise train a three-class problem without a word. Each check names where the label
occurs (CSV lines or files), the class it probably meant, and the fix.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

MIN_TYPO_LENGTH = 4  # shorter names (MUC / MUS of NCT-CRC-HE) differ by one letter on purpose


class LabelError(ValueError):
    """A label vocabulary that cannot be right; the message names the places and the fix."""


def check_labels(values: Sequence[str], places: Sequence[str], source: str, given: Sequence[str] = (),
                 min_images: int = 5) -> tuple[str, ...]:
    """The class list of `values` (one label per image), refused where it looks wrong.

    Args:
        values: each image's label.
        places: where each image's label comes from, for messages ("line 12", "NORMAL/im1.png").
        source: the file or folder the labels were read from.
        given: the fixed vocabulary (config `classes`); any other label is an error. Empty: the
            labels found, checked for case variants and typos of one another.
        min_images: a class with fewer images is refused (a typo, or too few to split and score).
    """
    counts = Counter(values)
    if given:
        _refuse_unknown(counts, values, places, source, tuple(given))
    else:
        _refuse_near_duplicates(counts, values, places, source)
    _refuse_rare(counts, values, places, source, min_images)
    return tuple(given) or tuple(sorted(counts))


def _where(label: str, values: Sequence[str], places: Sequence[str], limit: int = 3) -> str:
    found = [p for v, p in zip(values, places) if v == label]
    return ", ".join(found[:limit]) + (f" and {len(found) - limit} more" if len(found) > limit else "")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _images(n: int) -> str:
    return f"{n:,} image{'s' if n != 1 else ''}"


def _refuse_unknown(counts: Counter, values, places, source: str, given: tuple[str, ...]) -> None:
    unknown = sorted(set(counts) - set(given), key=lambda label: -counts[label])
    if not unknown:
        return
    parts = []
    for label in unknown[:5]:
        close = closest(label, given)
        hint = f" (did you mean '{close}'?)" if close else ""
        parts.append(f"'{label}'{hint}: {_images(counts[label])}, {_where(label, values, places)}")
    raise LabelError(f"{source}: {_count(len(unknown), 'label is', 'labels are')} not in classes {list(given)}: "
                     f"{'; '.join(parts)}. "
                     "Correct those labels, or add them to classes if they are real classes")


def _refuse_near_duplicates(counts: Counter, values, places, source: str) -> None:
    labels = sorted(counts, key=lambda label: (-counts[label], label))
    found = {}  # rarer label -> (the more common one it resembles, how)
    for i, common in enumerate(labels):
        for rare in labels[i + 1:]:
            kind = similarity(rare, common)
            if kind and rare not in found and common not in found:
                found[rare] = (common, kind)
    if not found:
        return
    parts = [f"'{rare}' ({_images(counts[rare])}: {_where(rare, values, places)}) differs from '{common}' "
             f"({_images(counts[common])}) only {kind}" for rare, (common, kind) in list(found.items())[:5]]
    fixes = ", ".join(f"'{rare}' to '{common}'" for rare, (common, _) in found.items())
    raise LabelError(f"{source}: {len(found)} label{'s' if len(found) > 1 else ''} would become a class of "
                     f"{'their' if len(found) > 1 else 'its'} own: label {'; label '.join(parts)}. Correct {fixes}; "
                     f"if they are real classes, list every class in the config (classes: {', '.join(labels)})")


def _refuse_rare(counts: Counter, values, places, source: str, min_images: int) -> None:
    rare = sorted((label for label, n in counts.items() if n < min_images), key=lambda label: counts[label])
    if not rare:
        return
    parts = []
    for label in rare[:5]:
        close = closest(label, [c for c in counts if c != label])
        hint = f", perhaps a typo of '{close}'" if close else ""
        parts.append(f"'{label}' ({_images(counts[label])}: {_where(label, values, places)}{hint})")
    raise LabelError(f"{source}: {_count(len(rare), 'class has', 'classes have')} fewer than "
                     f"min_class_images={min_images} images: "
                     f"{'; '.join(parts)}. Correct or remove those labels, add images of the class, or lower "
                     "min_class_images if so few images are intended (they cannot fill train, validation and test)")


def _normal(label: str) -> str:
    return re.sub(r"[\W_]+", "", label.casefold())


def similarity(a: str, b: str) -> str:
    """How two different labels look alike ('by case or spacing', 'by a typo'), or '' when they do not."""
    if _normal(a) == _normal(b):
        return "by case, spacing or punctuation"
    if min(len(a), len(b)) < MIN_TYPO_LENGTH or _differ_in_numbers_or_a_short_last_word(a, b):
        return ""
    limit = 1 if min(len(a), len(b)) <= 8 else 2
    return "by a typo (one or two letters)" if edit_distance(a.casefold(), b.casefold()) <= limit else ""


def _differ_in_numbers_or_a_short_last_word(a: str, b: str) -> bool:
    """grade_1 / grade_2 and type A / type B are meant to differ."""
    if re.sub(r"\d+", "#", a) == re.sub(r"\d+", "#", b):
        return True
    words_a, words_b = re.split(r"[\W_]+", a), re.split(r"[\W_]+", b)
    return (len(words_a) == len(words_b) > 1 and words_a[:-1] == words_b[:-1]
            and max(len(words_a[-1]), len(words_b[-1])) <= 2)


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps (PNUEMONIA)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], previous2[j - 2] + 1)
        previous2, previous = previous, row
    return previous[-1]


def closest(label: str, candidates: Sequence[str]) -> str:
    """The candidate `label` most probably meant ('' when none looks alike)."""
    alike = [c for c in candidates if similarity(label, c)]
    if alike:
        return min(alike, key=lambda c: edit_distance(label.casefold(), c.casefold()))
    return ""
