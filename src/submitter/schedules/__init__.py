"""Periodic jobs: a stored job request plus when to submit it (cron or interval)."""
