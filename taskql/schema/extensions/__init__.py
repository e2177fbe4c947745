"""What runs around the execution of every operation, rather than inside one field.

- guard.py: the one extension every operation passes before it runs (persisted query, parsing and
  validation cached per document, cost, rate limits).
- limits.py: the document limits (depth, aliases, tokens, directives, repeated fields) and the cost
  of a document; operation_cost.py: the cost cache and the rate-limit charge.
- metrics.py: operation durations, sampled root-field timings and error counts.
- shared_events.py: runs a subscription's selection once per event for all its subscribers.
- operation_type.py: the type of an operation, once Strawberry knows it.
"""
