"""ecgd: a bedside 12-lead ECG interpretation appliance."""

__version__ = "0.1.0"
