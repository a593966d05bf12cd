"""What a Particle module IS and what may be flashed: pure Python, no I/O beyond files.

``firmware`` imports neither ``hw`` nor ``kiosk``.
"""
