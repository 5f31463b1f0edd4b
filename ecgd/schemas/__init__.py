"""JSON Schemas that ecgd ships (the report schema)."""
