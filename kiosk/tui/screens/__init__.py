"""The kiosk's screens: main, manual flash, library, history, report, settings."""
