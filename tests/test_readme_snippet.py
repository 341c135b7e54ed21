"""The README's Python snippet runs as written (against a tiny published model)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_embed_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_publish_fixtures import make_tiny_model

    snippet = next(s for s in _python_snippets() if "load_embedder" in s)
    model = make_tiny_model(tmp_path / "m")
    work = tmp_path / "cwd"
    (work / "work").mkdir(parents=True)
    (work / "work" / "model").symlink_to(model)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(work / name)
    monkeypatch.chdir(work)
    scope: dict[str, object] = {}
    exec(compile(snippet, "README.md", "exec"), scope)  # our own README
    vectors = np.asarray(scope["vectors"])
    assert vectors.shape[0] == 3
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
