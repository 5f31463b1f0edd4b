"""Live inputs: the serial acquisition source (wire decoders, reconnecting reader thread).

``wire`` holds the pure byte decoders and encoders of the three formats in
``shared/docs/WIRE.md``; ``serial_source`` is the thread that opens the device, decodes and
cuts windows onto a bounded queue.
"""
