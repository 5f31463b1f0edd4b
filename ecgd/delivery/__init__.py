"""Delivery of sealed reports from the appliance to the reading station over TLS 1.3.

- ``tls``: the two TLS contexts (TLS 1.3 only, certificates verified on both sides)
- ``forwarder``: the appliance end (``ecgd forward``), stdlib ``http.client`` over ``ssl``
- ``receiver``: the station end (``ecgd receive``), an ASGI app served by uvicorn
"""
