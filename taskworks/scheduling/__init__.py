"""Periodic tasks: entries with a time zone and a missed-run policy (entries.py, cron.py),
fired once each by the beat that holds the leader lease (firing.py, leader.py), listed,
paused and resumed by operators (periodic.py)."""
