"""Database access: schema (:mod:`.tables`), connections (:mod:`.session`), migrations."""
