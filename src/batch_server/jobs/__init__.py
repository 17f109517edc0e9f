"""The job system: validation, status lifecycle, work units and leases, finalization."""
