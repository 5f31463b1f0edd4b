"""Security: what keeps a report confidential and a patient unnamed.

- ``seal``: hybrid public-key encryption of a report to the reading station's keys
- ``keys``: reading-station key files (generate, load, refuse weak keys)
- ``pseudonym``: keyed pseudonyms in place of patient identifiers
"""
