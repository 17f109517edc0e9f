"""The worker and its parts: ``loop`` (claiming units), ``runs`` (engine runs fed unit
after unit), ``feed`` (requests into a run, results stored), ``leases`` (renewing and
giving back), ``engine_slot`` (the loaded engine and its restart policy), ``steps``
(validation, finalization, expiry beside the engine), ``presence`` (the workers table),
``convert`` (input lines and result lines)."""

from batch_server.worker.loop import Worker

__all__ = ["Worker"]
