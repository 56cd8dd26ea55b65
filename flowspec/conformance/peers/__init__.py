"""Adapters for other Flow Matching libraries (the ``peers`` extra).

Each module imports its library only when imported itself, and exposes
``adapters()``: the list of adapters it ships, one per (class, schedule) pair.
"""
