"""The touchscreen kiosk (Textual): app.py, screens/, widgets/, one kiosk.tcss."""
