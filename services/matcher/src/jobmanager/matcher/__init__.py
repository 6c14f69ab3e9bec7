"""The trigger-matcher: events in, runs queued; the gate; results recorded."""
