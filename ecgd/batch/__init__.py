"""``ecgd batch``: archive reprocessing with the appliance's own analysis, exactly once.

    find_recordings (records.companions) -> work (per input: key, skip, read, prepare,
    infer, rows) -> run (ledger + shards, committed once) ; engines: local (worker
    processes), ray_engine (a Ray Data pipeline) ; table (the row layout) ; progress

The appliance (``ecgd run``, ``ecgd analyze``) never imports this package; its third-party
needs are extras: pyarrow (``archive``) for Parquet, Ray Data (``cluster``) for Ray.
"""
