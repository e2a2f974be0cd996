"""The memory engine's snapshots: the file format (``file.py``: records, header, claim, journal)
and the writer (``writer.py``: restore at start, write on schedule, on demand and at exit).

A package rather than two modules beside the store: the two are one feature, the writer is the
format's only user inside the engine, and together they are ~1,000 lines.
"""
