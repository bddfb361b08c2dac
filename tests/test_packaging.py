"""What the Makefile installs agrees with what pyproject.toml declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_makefile_builds_the_llama_cpp_version_the_local_extra_pins() -> None:
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["local"]
    (pinned,) = [re.sub(r"\[.*?\]", "", r) for r in extra if r.startswith("llama-cpp-python")]
    (made,) = re.findall(r"^LLAMA_PIN := (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert made.strip() == pinned


def test_the_dev_extra_holds_every_pure_python_need_of_the_llama_cpp_server() -> None:
    # `make test` installs llama-cpp-python with --no-deps while the suite runs: whatever
    # its server imports must already be there.
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "dev"
    ]
    names = {re.split(r"[<>=\[; ]", d, maxsplit=1)[0].lower() for d in dev}
    for need in (
        "diskcache",
        "uvicorn",
        "fastapi",
        "pydantic-settings",
        "sse-starlette",
        "starlette-context",
        "pyyaml",
    ):
        assert need in names, need
