"""The ``voicegender`` command: the composition root for one-off use."""
