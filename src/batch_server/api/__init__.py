"""HTTP API: one router per resource (:mod:`.files`, :mod:`.batches`, :mod:`.models`,
:mod:`.health`) over the shared :class:`~batch_server.app.AppContext`."""
