"""``voicegender bench``: the service's speed against the model's own limit and the seed's loop (issue 6)."""
