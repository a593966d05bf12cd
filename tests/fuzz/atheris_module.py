"""Coverage-guided fuzzing of the module parser with atheris (libFuzzer), by hand; not part of pytest.

    .venv/bin/pip install -e ".[fuzz]"      # atheris
    .venv/bin/python -m tests.fuzz.atheris_module -max_total_time=300 [-runs=N] [corpus_dir ...]

Seeded with the real binaries of ../shared/fixtures/particle-binaries (copied into a temporary corpus folder unless
folders are given). Each input must parse to a module or raise NotAModuleError, and a parsed module must stay usable
(the same checks as tests/fuzz/test_module_fuzz.py); anything else stops the run with the input saved as
``crash-<sha1>``, which ``parse_module(open(path, "rb").read())`` replays.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> None:
    """Run libFuzzer over parse_module with ``argv`` (libFuzzer's flags, then corpus folders)."""
    import atheris  # imported here: pytest imports this file (doctests) where atheris may be missing

    with atheris.instrument_imports():
        from firmware.module import NotAModuleError, parse_module
    from tests.fixture_paths import CORPUS, FIXTURES
    from tests.fuzz.test_module_fuzz import check_usable

    def one_input(data: bytes) -> None:
        try:
            module = parse_module(data)
        except NotAModuleError:
            return
        check_usable(module, data)

    args = [argv[0], *argv[1:]]
    if not any(not a.startswith("-") for a in argv[1:]):
        seeds = Path(tempfile.mkdtemp(prefix="atheris-module-"))
        for path in sorted([*FIXTURES.glob("*.bin"), *CORPUS.glob("*.bin")]):
            if path.stat().st_size <= 300 * 1024:
                shutil.copy(path, seeds / path.name)
        args.append(str(seeds))
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
