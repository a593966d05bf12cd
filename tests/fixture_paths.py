"""Where the real Particle binaries are: ../shared beside the repository (CI has them there too)."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "particle-binaries"
CORPUS = FIXTURES / "corpus"


def fixture_bytes(name: str) -> bytes:
    """The bytes of a fixture by file name: one of the 13 documented files, or a corpus file."""
    for folder in (FIXTURES, CORPUS):
        path = folder / name
        if path.is_file():
            return path.read_bytes()
    raise FileNotFoundError(f"no fixture {name!r} in {FIXTURES} or {CORPUS}")
