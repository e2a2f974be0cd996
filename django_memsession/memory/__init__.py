"""The memory engine (``SESSION_ENGINE = "django_memsession"``): its ``SessionStore``
(``engine.py``), the bounded store (``store.py``, with ``lru.py``, ``remembered.py`` and
``index.py``), the pruner, snapshots (``snapshot/``) and this process's services
(``services.py``, the engine's composition root). It never imports the Redis engine.

Importing this package imports nothing: its modules are imported where they are used.
"""
