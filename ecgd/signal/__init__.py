"""Signal stages: what is computed from the millivolt samples of a window.

- ``quality``: per-lead signal quality control; a verdict is a value, not an exception
- ``beats``: R-peak detection, heart rate, RR intervals, RR irregularity
- ``preprocess``: the preprocessing profiles a model manifest names (``profiles``: their
  parameters, as plain data)
- ``resample``: polyphase resampling to the model's rate
"""
