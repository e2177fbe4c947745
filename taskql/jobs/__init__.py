"""Background jobs on a queue in Redis (saq): notifications, email, due-date reminders, cleanup.

Writes queue their jobs through the outbox (services/outbox.py), so a job is queued exactly when
the change that causes it is committed. Every job is idempotent per cause: a retry, a relayed
copy or a second worker never notifies or emails twice. Workers run as `taskql worker`, or inside
each server process (JOBS_IN_PROCESS, the default outside production).
"""
