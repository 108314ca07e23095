"""slotkeeper benchmarks: ``python -m bench`` (``make bench``). See ``bench/sections.py``."""
