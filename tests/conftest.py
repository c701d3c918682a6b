"""Shared fixtures: offline hub, a private model cache per session, small real data."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Keep the user's cache (and a converted SmolLM2) when it is set; otherwise a throwaway one.
    if "FEDGRPO_CACHE" not in os.environ:
        os.environ["FEDGRPO_CACHE"] = str(tmp_path_factory.mktemp("fedgrpo-cache"))
