"""Shared fixtures: offline hub, a private model cache per session; tests under e2e/ are marked e2e."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Keep the user's cache (and a converted SmolLM2) when it is set; otherwise a throwaway one.
    if "FEDGRPO_CACHE" not in os.environ:
        os.environ["FEDGRPO_CACHE"] = str(tmp_path_factory.mktemp("fedgrpo-cache"))
