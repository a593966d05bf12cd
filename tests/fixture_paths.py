"""Where the real Particle binaries are: ../shared beside the repository (CI has them there too)."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "particle-binaries"
CORPUS = FIXTURES / "corpus"
