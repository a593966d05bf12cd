"""The web page `kiosk serve` gives a browser (our own template for textual-serve's Server).

textual-serve's stock page loads its font from an internet font service; a repair bench is offline.
``app_index.html`` here loads only what the kiosk itself serves: textual-serve's own ``/static/`` files
(its terminal script and stylesheet, and the Roboto Mono font files it ships, which its script asks for
by name), by paths relative to the page, and the websocket on the page's own host.
"""

from pathlib import Path

TEMPLATES = Path(__file__).parent  # holds app_index.html, the one template textual-serve's Server renders
