"""Every Redis key taskworks writes, in one place (arq's constants.py convention)."""

from __future__ import annotations

__all__ = ["API_LOGIN_ATTEMPTS", "API_SESSION", "AUTOSCALE_STATUS", "BEAT_LAST_FIRE",
           "BEAT_LEADER", "BEAT_PAUSED", "BREAKER", "BREAKERS", "BREAKER_CACHE", "BREAKER_EVENTS",
           "BREAKER_NAMES", "BREAKER_WINDOW",
           "CONSUMERS", "DEDUPE", "HELD", "IDEMPOTENCY", "NOTIFY", "PREFIX", "RATE_LIMIT",
           "REDELIVERIES", "REQUEUED", "RETRY_BUDGET", "SCHEDULE", "SCHEDULE_COUNTS",
           "SCHEDULE_ENVELOPES", "SCHEDULE_IDS", "UNDELIVERABLE", "UNDELIVERABLE_MAX",
           "WAKE", "api_login_attempts", "api_session", "beat_leader", "breaker", "breaker_cache",
           "breaker_events", "breaker_window", "dedupe", "held", "idempotency", "rate_limit",
           "redeliveries", "requeued", "retry_budget", "wake"]

PREFIX = "taskworks:"

#: leader lock held by the one beat process allowed to fire schedule entries
BEAT_LEADER = PREFIX + "beat:leader"


def beat_leader(name: str = "default") -> str:
    return f"{BEAT_LEADER}:{name}"

#: periodic entries (scheduling/): the last fire time of each entry (hash: entry name ->
#: epoch seconds), written in the same script that publishes the fire, so a restart or
#: a new leader neither repeats nor loses one; and the entries paused by an operator (set)
BEAT_LAST_FIRE = PREFIX + "beat:last-fire"
BEAT_PAUSED = PREFIX + "beat:paused"

#: the durable schedule (broker/schedule.py): messages not due yet, kept here instead
#: of in a worker's memory. The sorted set holds delivery tags scored by due time
#: (epoch seconds); the envelopes hash maps each tag to its JSON envelope (list key,
#: queue, task id and name, the message); the ids hash maps a task id to its tag (show,
#: cancel); the counts hash counts scheduled messages per queue
SCHEDULE = PREFIX + "schedule"
SCHEDULE_ENVELOPES = PREFIX + "schedule:envelopes"
SCHEDULE_IDS = PREFIX + "schedule:ids"
SCHEDULE_COUNTS = PREFIX + "schedule:counts"

#: one wake-up token per message published to a queue (broker/transport.py): consumers
#: with nothing to do block on these, never on the queue itself; and where a message
#: that is not kombu's JSON is set aside instead of being lost
WAKE = PREFIX + "wake:"
UNDELIVERABLE = PREFIX + "undeliverable"
#: entries kept in UNDELIVERABLE (the newest): trimmed at every push, so a producer of
#: foreign messages cannot fill the broker's memory (settings: retention.undeliverable_max)
UNDELIVERABLE_MAX = 10_000


def wake(queue: str) -> str:
    return WAKE + queue


#: every consumer of the transport, scored by its last heartbeat (broker/heartbeat.py),
#: and per consumer the messages it holds (sorted set of "tag|queue key", scored by the
#: time taken): a consumer whose beat lapses has them moved back (broker/sweep.lua)
CONSUMERS = PREFIX + "consumers"
HELD = PREFIX + "held:"


def held(consumer: str) -> str:
    return HELD + consumer

#: how often a message was restored after its worker died, per task id
REDELIVERIES = PREFIX + "redeliveries:"
#: failure-notification dedupe windows, per task name and exception type
NOTIFY = PREFIX + "notify:"
#: retries admitted per task name over the last minute, across the cluster (sorted set)
RETRY_BUDGET = PREFIX + "retry-budget:"


def redeliveries(task_id: str) -> str:
    return REDELIVERIES + task_id


#: set when taskworks requeued a message because its outcome could not be recorded, so
#: the redelivery is not counted as a lost worker's (runtime/redelivery.lua)
REQUEUED = PREFIX + "requeued:"


def requeued(task_id: str) -> str:
    return REQUEUED + task_id


def retry_budget(task_name: str) -> str:
    return RETRY_BUDGET + task_name


#: circuit breakers (resilience/breaker.py): the state hash, the sliding window of
#: recent outcomes (sorted set), the journal of transitions (capped stream), per name;
#: and every breaker name with state, scored by its last write (sorted set). Each expires
#: ``breaker.idle_days`` after its last write (an http_call host per name would grow
#: them for ever)
BREAKER = PREFIX + "breaker:"
BREAKER_WINDOW = PREFIX + "breaker-window:"
BREAKER_EVENTS = PREFIX + "breaker-events:"
BREAKER_NAMES = PREFIX + "breaker-names"
#: the set of names written before BREAKER_NAMES (no score to age them by): still read,
#: never written, and given the idle expiry by the first write after an upgrade
BREAKERS = PREFIX + "breakers"
#: last good results kept for fallback answers (resilience/fallback.py), per breaker and key
BREAKER_CACHE = PREFIX + "breaker-cache:"


def breaker(name: str) -> str:
    return BREAKER + name


def breaker_window(name: str) -> str:
    return BREAKER_WINDOW + name


def breaker_events(name: str) -> str:
    return BREAKER_EVENTS + name


def breaker_cache(name: str, key: str) -> str:
    return f"{BREAKER_CACHE}{name}:{key}"

#: idempotent tasks: stored result and running lease, per task name + argument digest
IDEMPOTENCY = PREFIX + "idempotency:"
#: enqueue-side dedupe: dedupe key -> the id of the task queued for it
DEDUPE = PREFIX + "dedupe:"
#: cluster-wide rate limits: GCRA state per limit name, and per-task reservations
RATE_LIMIT = PREFIX + "ratelimit:"


def idempotency(task_name: str, digest: str) -> tuple[str, str]:
    """Stored-result and lease keys of one idempotent call (one {hash tag}: one slot)."""
    base = f"{IDEMPOTENCY}{{{task_name}:{digest}}}"
    return f"{base}:result", f"{base}:lease"


def dedupe(key: str) -> str:
    return DEDUPE + key


def rate_limit(name: str, task_id: str) -> tuple[str, str, str]:
    """A limit's schedule and gate, and this task's reservation of a slot (one slot)."""
    base = f"{RATE_LIMIT}{{{name}}}"
    return f"{base}:schedule", f"{base}:gate", f"{base}:reserved:{task_id}"

#: the running supervisor's latest status (JSON, expires when the supervisor stops)
AUTOSCALE_STATUS = PREFIX + "autoscale:status"

#: dashboard sessions (taskworks/sessions.py): one key per live login, named by an HMAC of the
#: cookie's random id with the API token (Redis never holds a usable cookie, and a new
#: token ends every session); expires with the session, deleted by logout
API_SESSION = PREFIX + "api:session:"
#: login attempts per client address in the current window (taskworks/sessions.py)
API_LOGIN_ATTEMPTS = PREFIX + "api:login-attempts:"


def api_session(digest: str) -> str:
    return API_SESSION + digest


def api_login_attempts(address: str) -> str:
    return API_LOGIN_ATTEMPTS + address
