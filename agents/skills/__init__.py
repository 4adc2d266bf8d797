"""Skills: the public plugin contract, the built-in skills and how a skill is named."""

from agents.skills.base import Skill, score_output
from agents.skills.builtin import BUILTIN_SKILLS
from agents.skills.loader import SkillLoadError, load_skill, load_skills, skill_catalog

__all__ = [
    "BUILTIN_SKILLS",
    "Skill",
    "SkillLoadError",
    "load_skill",
    "load_skills",
    "score_output",
    "skill_catalog",
]
