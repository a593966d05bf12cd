"""Interoperability suites: Particle's own software (tests/peers) and real binaries against the kiosk."""
