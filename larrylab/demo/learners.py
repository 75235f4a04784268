"""Simulated workshop learners: what they say per PWS category, and how they rate replies.

Everything here is simulated traffic for the offline demo and load tests, labelled as such.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

OPENERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "problem_clarification": (
            "I want to build an app that helps nurses swap shifts. Is that a good idea?",
            "Our customers complain about onboarding. What should we build?",
            "Small farmers lose money on spoiled produce. Where do I start?",
        ),
        "tta": (
            "Remote work keeps growing. Where does that trend lead if we push it to the extreme?",
            "Batteries get cheaper every year. What happens when energy storage is almost free?",
            "Everyone is getting a personal AI tutor. Let's trend that to the absurd.",
        ),
        "jtbd": (
            "Why do people buy our meal kits? I think it's about healthy food.",
            "What job is a commuter hiring a podcast to do?",
            "Parents use our scheduling app. What job are they really hiring it for?",
        ),
        "s_curve": (
            "Where is electric scooter sharing on its S-curve right now?",
            "Is the smartphone camera still improving fast, or has it matured?",
            "How do I tell whether solar panels are at the top of their S-curve?",
        ),
        "ackoff_dikw": (
            "We have tons of data from our sensors. Isn't that the same as knowledge?",
            "Our survey says 62% of users churn in month two. Is that information or wisdom?",
            "How do I move my team from dashboards to actual decisions using Ackoff's hierarchy?",
        ),
        "red_team": (
            "Red team my idea: a subscription for repairing kids' toys.",
            "Challenge my assumption that hospitals will pay for better scheduling.",
            "Attack my plan to sell compost bins to apartment dwellers.",
        ),
        "error_recovery": (
            "I'm confused, I thought JTBD meant listing product features.",
            "Wait, isn't trending to the absurd just wild predictions? I think I got it wrong.",
            "I misunderstood the S-curve as a sales forecast. Can you correct me?",
        ),
    }
)

FOLLOW_UPS: tuple[str, ...] = (
    "Okay, that helps. Can you push me one step further?",
    "I talked to three users and they mostly agreed. What next?",
    "Here is my revised version. Is it sharper now?",
    "I'm not sure I follow. Can you give me an example from another industry?",
)


@dataclass(frozen=True)
class LearnerTaste:
    """How simulated learners rate a reply: a 1-5 star distribution per arm (simulated)."""

    weights: Mapping[str, tuple[float, float, float, float, float]]
    default: tuple[float, float, float, float, float] = (0.05, 0.1, 0.2, 0.35, 0.3)

    def rate(self, arm: str, rng: random.Random) -> int:
        """A 1-5 star rating for a reply served by `arm`."""
        return rng.choices((1, 2, 3, 4, 5), weights=self.weights.get(arm, self.default))[0]


def thread_script(category: str, turns: int, rng: random.Random) -> list[str]:
    """The learner's messages for one thread of `turns` turns."""
    first = rng.choice(OPENERS[category])
    return [first, *(rng.choice(FOLLOW_UPS) for _ in range(turns - 1))]
