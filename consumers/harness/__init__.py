"""The measuring harness: ``interest bench`` (with its streams and soak), ``interest demo``
and ``interest eval``, and :mod:`.report`, what every report says about how it was made.
None of it runs in a worker."""
