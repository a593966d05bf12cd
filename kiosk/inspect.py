"""The module table of a device, like `particle serial inspect`: each module with PASS/FAIL per check.

The device runs four checks on every module at boot (integrity = CRC, address range, platform,
dependencies) and reports them in control request 90 or the listening-mode ``s`` JSON; this module
turns either into one table for the technician and the support ticket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firmware.platforms import FUNCTION_PHRASES, Platform, function_name
from firmware.versions import describe_system_version
from hw.control import ModuleInfo

CHECKS = ("integrity", "range", "platform", "dependencies")
CHECK_LABELS = {
    "integrity": "Integrity",
    "range": "Address Range",
    "platform": "Platform",
    "dependencies": "Dependencies",
}


@dataclass(frozen=True)
class InspectedModule:
    """One module as the device reports it, with the verdict of each of its checks."""

    function: int
    index: int
    version: int
    size: int
    checks: dict[str, bool | None]  # None: the device did not report this check
    dependencies: tuple[tuple[int, int, int], ...]

    @property
    def ok(self) -> bool:
        return all(v is not False for v in self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "function": function_name(self.function),
            "index": self.index,
            "version": self.version,
            "size": self.size,
            "checks": {k: (None if v is None else ("PASS" if v else "FAIL")) for k, v in self.checks.items()},
            "ok": self.ok,
            "dependencies": [{"function": function_name(f), "index": i, "version": v} for f, i, v in self.dependencies],
        }


def from_control(modules: list[ModuleInfo]) -> list[InspectedModule]:
    """From control request 90 (either reply format; the legacy one reports only two checks)."""
    out = []
    for m in modules:
        reported = CHECKS if not m.legacy else ("integrity", "dependencies")
        checks = {c: (c not in m.failed) if c in reported else None for c in CHECKS}
        deps = tuple((d.function, d.index, d.version) for d in m.dependencies)
        out.append(InspectedModule(m.function, m.index, m.version, m.size, checks, deps))
    return out


def describe(platform: Platform, modules: list[InspectedModule], source: str) -> str:
    """The table as text, in `particle serial inspect` wording."""
    lines = [f"Platform: {platform.id} - {platform.display_name}", f"Modules (from {source})"]
    for m in modules:
        phrase = FUNCTION_PHRASES.get(m.function, f"module of function {m.function}").split(" ", 1)[1]
        version = m.version
        if function_name(m.function) in ("system-part", "mono"):
            version = f"{m.version} (Device OS {describe_system_version(m.version)})"
        lines.append(f"  {phrase.capitalize()} #{m.index} - version {version}, {m.size} bytes")
        for check in CHECKS:
            verdict = m.checks[check]
            lines.append(
                f"    {CHECK_LABELS[check]}: {'not reported' if verdict is None else ('PASS' if verdict else 'FAIL')}"
            )
        for f, i, v in m.dependencies:
            dep_phrase = FUNCTION_PHRASES.get(f, f"module of function {f}").split(" ", 1)[1]
            lines.append(f"      needs {dep_phrase} #{i} - version {v} or newer")
    bad = [m for m in modules if not m.ok]
    lines.append("All modules PASS" if not bad else f"{len(bad)} module(s) FAIL")
    return "\n".join(lines)
