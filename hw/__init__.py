"""The physical layer: one small port per kind of hardware, each with a real driver and a simulated twin.

Imports go one way: ``hw`` may use ``firmware``; it never imports ``kiosk``.
"""
