"""The bench service: one process owns the hardware, the journal and the library; front ends are its clients."""
