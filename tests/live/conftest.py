"""Fixtures shared by the live tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live.bundles import BundleFactory, build_test_bundle


@pytest.fixture(scope="session")
def model_bundle(ws_capture: Path, tmp_path_factory: pytest.TempPathFactory) -> BundleFactory:
    """`model_bundle(action_mode="toggle", fixed_action=None)`: a verified bundle of an
    untrained model (tests.live.bundles.build_test_bundle), built once per session for
    each kind asked for and shared by every test that asks for the same kind."""
    built: dict[tuple[str, int | None], Path] = {}

    def get(action_mode: str = "toggle", fixed_action: int | None = None) -> Path:
        key = (action_mode, fixed_action)
        if key not in built:
            built[key] = build_test_bundle(ws_capture, tmp_path_factory, action_mode, fixed_action)
        return built[key]

    return get


@pytest.fixture
def bundle_dir(model_bundle: BundleFactory) -> Path:
    """A toggle-mode bundle (Discrete(3))."""
    return model_bundle()


@pytest.fixture
def target_bundle_dir(model_bundle: BundleFactory) -> Path:
    """A target-mode bundle (Discrete(4): the resting orders wanted)."""
    return model_bundle("target")
