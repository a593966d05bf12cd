"""The simulated bench: Particle devices modelled over time, wired to the real drivers through their
libraries' own seams (gpiozero mock pins, a pyusb backend, a pseudo-terminal, a fake SWD probe).

Only ``kiosk.bench`` imports this package; no real driver does.
"""
