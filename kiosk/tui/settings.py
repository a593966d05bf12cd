"""Settings a technician may change at the bench: how the screen looks and where reports go.

Nothing here touches the hardware's limits (button hold times, drain time, pins): those live in the
bench config and the hazard guard, and the screen only shows them. Saved as JSON in the user's config
folder; a missing or damaged file means the defaults.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

THEMES = {"kiosk-dark": "High contrast, dark", "kiosk-light": "High contrast, light"}
REPORT_FORMATS = {"md": "Markdown (for people)", "json": "JSON (for tools)"}


def settings_path() -> Path:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "particle-kiosk" / "tui.json"


def default_report_folder() -> Path:
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "particle-kiosk" / "reports"


@dataclass
class TuiSettings:
    """The screen's settings; every field has a safe default."""

    theme: str = "kiosk-dark"
    report_format: str = "md"
    report_folder: str = ""  # empty: default_report_folder()
    full_device_ids: bool = False

    @property
    def reports_to(self) -> Path:
        return Path(self.report_folder).expanduser() if self.report_folder else default_report_folder()

    @classmethod
    def load(cls, path: Path | None = None) -> TuiSettings:
        path = path or settings_path()
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in fields(cls)}
        settings = cls(**{k: v for k, v in raw.items() if k in known}) if isinstance(raw, dict) else cls()
        return settings.checked()

    def checked(self) -> TuiSettings:
        """Unknown values fall back to the defaults (a hand-edited file cannot break the screen)."""
        if self.theme not in THEMES:
            self.theme = "kiosk-dark"
        if self.report_format not in REPORT_FORMATS:
            self.report_format = "md"
        self.report_folder = str(self.report_folder or "")
        self.full_device_ids = bool(self.full_device_ids)
        return self

    def save(self, path: Path | None = None) -> Path:
        path = path or settings_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path
