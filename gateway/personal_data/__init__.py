"""Personal data: the one place that decides what of a value may be stored or sent.

- `normalize`: the pieces the platforms' hashing rules share (email, phone, names, dates).
- `match_keys`: the rules a user field is normalized by before hashing, each named for what it
  does, and the one `hashed`/`clear`; every destination declares its table of them.
- `hashing`: SHA-256 of normalized values; recognizing values hashed already.
- `detect`: personal data where none belongs (a free-form field, free text, a URL parameter).

Sources, the pipeline, `forward`, `dry_run` and every destination call these; none decides for
itself what is personal.
"""
