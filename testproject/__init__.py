"""A small demo site for django-memsession. Not part of the package; never deploy it."""
