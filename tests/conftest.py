"""Shared fixtures: offline hub, a private model cache per session, a real ``transformers serve``;
tests under e2e/ are marked e2e."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

if TYPE_CHECKING:
    from fedgrpo.client.endpoint import EndpointModel

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


@pytest.fixture
def prefill_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The tokens each prefill (:func:`fedgrpo.accel.prompt_cache.prefill`) reads, in order (filled as the
    test runs)."""
    import fedgrpo.accel.prompt_cache as prompt_cache

    read: list[int] = []
    real = prompt_cache.prefill
    monkeypatch.setattr(
        prompt_cache, "prefill", lambda m, c=None, **i: read.append(i["input_ids"].numel()) or real(m, c, **i)
    )
    return read


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EndpointModel]:
    """The tiny random model behind a real ``transformers serve`` (about 7 s to start), shared by every
    test module that asks for it."""
    from fedgrpo.models.loading import tiny_random_folder
    from tests.helpers import transformers_serve

    with transformers_serve(str(tiny_random_folder()), tmp_path_factory.mktemp("serve")) as endpoint:
        yield endpoint
