"""The kiosk's widgets: the slot card and its parts, the QR code."""
