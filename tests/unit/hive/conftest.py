"""Fixtures for the hive's unit tests."""

from __future__ import annotations

import pytest


class FakeRegistry:
    """What a round asks of the registry before its job has run: nothing registered yet."""

    experiment = "hive-rounds"

    def experiment_id(self) -> str:
        return "1"

    def has_version(self, version: int) -> bool:
        return False


@pytest.fixture
def fake_registry() -> FakeRegistry:
    return FakeRegistry()
