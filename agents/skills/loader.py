"""Resolves a skill named on the command line: a built-in name or ``module:attribute``."""

from __future__ import annotations

import importlib
import inspect

from agents.skills.builtin import BUILTIN_SKILLS
from agents.skills.splits import SkillSplitError, kind_of


class SkillLoadError(ValueError):
    """A skill name that does not resolve to an object fitting the skill contract."""


def load_skill(spec: str) -> object:
    """Returns the skill named by ``spec``: a built-in name, or ``module:attribute``.

    An attribute that is a class is instantiated with no arguments. The result must have a string
    ``name`` and a callable ``sample``, and may have a ``kind`` (``generalize``, the default, or ``recall``)
    and, if it generalizes, a callable ``split(prompt)``; anything else is refused with the reason.
    """
    if spec in BUILTIN_SKILLS:
        return BUILTIN_SKILLS[spec]
    if ":" not in spec:
        known = ", ".join(sorted(BUILTIN_SKILLS))
        raise SkillLoadError(f"unknown skill {spec!r}: use a built-in ({known}) or module:attribute")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise SkillLoadError(f"skill {spec!r}: cannot import module {module_name!r}: {err}") from err
    try:
        skill = getattr(module, attr)
    except AttributeError as err:
        raise SkillLoadError(f"skill {spec!r}: module {module_name!r} has no {attr!r}") from err
    if inspect.isclass(skill):
        skill = skill()
    if not isinstance(getattr(skill, "name", None), str) or not callable(getattr(skill, "sample", None)):
        raise SkillLoadError(f"skill {spec!r} needs a str `name` and a callable `sample(rng)`")
    try:
        kind = kind_of(skill)
    except SkillSplitError as err:
        raise SkillLoadError(f"skill {spec!r}: {err}") from err
    split = getattr(skill, "split", None)
    if split is not None and (kind == "recall" or not callable(split)):
        why = "a recall skill's test is its whole table" if kind == "recall" else "it must be callable"
        raise SkillLoadError(f"skill {spec!r} has a `split` that cannot be used: {why}")
    return skill


def load_skills(specs: list[str]) -> list[object]:
    """Loads several skills and refuses two with the same name, since results are keyed by name."""
    skills = [load_skill(s) for s in specs]
    names = [s.name for s in skills]  # type: ignore[attr-defined]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SkillLoadError(f"skills named more than once: {', '.join(dupes)}")
    return skills


def skill_catalog(plugin_specs: list[str]) -> dict[str, str]:
    """Maps each skill's name to the spec that loads it: every built-in, plus the given plugins.

    Learnings carry a skill's name; a process that must load the skill (a round, the gate) looks
    the name up here.
    """
    catalog = {name: name for name in BUILTIN_SKILLS}
    for spec in plugin_specs:
        catalog[load_skill(spec).name] = spec  # type: ignore[attr-defined]
    return catalog
