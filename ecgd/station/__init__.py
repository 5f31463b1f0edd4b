"""The reading station: open sealed reports, show them, render the tracing, export them.

The appliance never imports this package (a test runs the daemon's imports and ``ecgd
analyze`` and checks); its third-party needs come with ``pip install 'ecgd[station]'``.
Every command here opens reports through :class:`ecgd.station.opener.ReportOpener`.
"""
