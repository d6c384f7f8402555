"""Kombu's Redis transport with one Redis client object per channel instead of one per call.

Kombu's Redis channel builds a new ``redis.Redis`` for every unacked-index write,
acknowledgement and publish (``Channel.conn_or_acquire``). The client is only a handle on
the channel's connection pool, but building one copies redis-py's table of response
callbacks: in a prefork worker draining no-op tasks that was a tenth of its CPU
(docs/benchmarks.md, issue 9). A ``redis.Redis`` is thread-safe (every command checks a
connection out of the pool and returns it), so the channel keeps one and hands it out.
Commands, keys and their order are unchanged: only the Python object is reused.

It also closes kombu's message-loss window (kombu #305, celery #7950). Kombu takes a
message with BRPOP and records it as unacknowledged in a second round trip, so a worker
SIGKILLed between the two loses the message for good. This channel takes messages with
one Lua script that pops and records atomically (consume.lua); the visibility timeout
restores whatever a dead worker held. A script cannot block, so a consumer with nothing
to do blocks on wake-up lists instead: every publish through this transport pushes a
token onto ``taskworks:wake:<queue>`` (trimmed now and then), and a consumer that finds every queue
empty waits with BRPOP on its queues' wake lists, at most ``brpop_timeout`` (1 s) at a
time, then looks again. Messages pushed by other clients (plain Celery) carry no token:
they are found within that second.

The consume loop is a two-state machine on the channel's one blocking connection:
*take* (the script; again at once while it finds messages) and *wait* (BRPOP on the wake
lists, entered when the script finds every queue empty). Same round trips per message as
kombu (the script replaces BRPOP plus the unacked write), and none spent waiting while
a backlog drains.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from time import monotonic, time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.commands.core import Script
from redis.exceptions import NoScriptError, RedisError

from taskworks import keys
from taskworks.broker import deferral, schedule
from taskworks.broker.heartbeat import CONSUMER_TIMEOUT, Heartbeat, heartbeat_for
from taskworks.broker.publish_batch import WAKE_TOKENS, PublishBatch
from taskworks.broker.qos import QoS
from taskworks.logs import get_logger

__all__ = ["CONSUME_SCRIPT", "CONSUME_SHA", "SCHEMES", "TRANSPORT", "WAKE_TOKENS", "Channel",
           "PublishBatch", "QoS", "Transport", "keeps_delayed", "transport_for"]

log = get_logger("taskworks.broker")

#: pop-and-record-as-unacked, atomically; comment lines dropped (sent by EVAL at times)
CONSUME_SCRIPT = "\n".join(
    line for line in (resources.files("taskworks.broker") / "consume.lua").read_text()
    .splitlines() if not line.lstrip().startswith("--"))
#: what a take sends: the script's digest (EVALSHA), or the script itself (EVAL) when the
#: server does not know it yet (a new server, or one restarted or flushed)
CONSUME_SHA = hashlib.sha1(CONSUME_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis's id
#: the same script through redis-py's runner (EVALSHA, the script after a NOSCRIPT), for
#: calls outside the consume loop
_CONSUME = Script(None, CONSUME_SCRIPT.encode())  # type: ignore[arg-type]  # each call names its client
#: the URL schemes kombu serves with its Redis transport (the ones this class replaces)
SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    QoS = QoS
    #: the transport option ``undeliverable_max``: entries consume.lua keeps in
    #: keys.UNDELIVERABLE (the newest), trimmed at every push
    undeliverable_max: int = keys.UNDELIVERABLE_MAX
    #: the transport option ``consumer_timeout``: seconds without a heartbeat after which
    #: a consumer is dead and what it held goes back to its queues (broker/heartbeat.py)
    consumer_timeout: float = CONSUMER_TIMEOUT
    from_transport_options = (*kombu_redis.Channel.from_transport_options,
                              "undeliverable_max", "consumer_timeout")
    _shared_client: Any = None
    #: publishes by this channel, for trimming the wake lists every WAKE_TOKENS of them
    _published = 0
    #: the command in flight on the blocking connection: "EVALSHA"/"EVAL" (take) or
    #: "BRPOP" (wait)
    _pending: str | None = None
    #: the server has the consume script (an EVAL of it succeeded on this channel)
    _script_known = False
    #: the next command waits for a token (every queue was empty at the last look)
    _waiting = False
    #: the last wait ended with a token: the next take must not spend another
    _token_taken = False
    #: the tag consume.lua recorded for the message being delivered (QoS.append skips it)
    _recorded_tag: str | None = None
    #: the heartbeat this channel beats with (broker/heartbeat.py), from its first take
    _heartbeat: Heartbeat | None = None
    #: the mover that publishes what is due (broker/schedule.py), from its first take
    _mover: schedule.Mover | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: who holds the messages this channel takes (keys.held(consumer_id))
        self.consumer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.held_key = keys.held(self.consumer_id)
        #: held member ("tag|queue key") of each message delivered and not settled yet
        self._held: dict[str, str] = {}
        #: acknowledged members waiting for the next take, and those a take carries
        self._acks: list[str] = []
        self._acks_sent: list[str] = []
        self._acks_lock = threading.Lock()
        #: queues consumed without acknowledgements (replies, broadcasts)
        self._no_ack_queues: set[str] = set()

    @property
    def atomic_consume(self) -> bool:
        # kombu's own path where its key prefixing or ack emulation differ from ours
        return bool(self.ack_emulation) and not self.global_keyprefix

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            # first use, or the channel replaced its pool: a client on the current one
            shared = self._shared_client = self._create_client()
        yield shared

    # -- consuming: take (consume.lua) or wait (BRPOP on wake lists) ----------------
    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self.atomic_consume:
            return super()._brpop_start(timeout)  # type: ignore[no-any-return]
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        if self._heartbeat is None:
            self._heartbeat = heartbeat_for(self.pool, self.unacked_key,
                                            float(self.consumer_timeout))
            self._heartbeat.add(self)
            # a consuming process publishes what is due
            self._mover = schedule.mover_for(self.pool, self)
        command: list[Any]
        if self._waiting:
            wait = self.brpop_timeout if timeout is None else timeout
            command = ["BRPOP", *(keys.wake(queue) for queue in queues), wait or 0]
        else:
            queue_keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps
                          for queue in queues]
            with self._acks_lock:
                self._acks_sent, self._acks = self._acks, []
            script = ["EVALSHA", CONSUME_SHA] if self._script_known \
                else ["EVAL", CONSUME_SCRIPT]
            command = [*script, 3 + len(queues) + len(queue_keys),
                       self.unacked_key, self.held_key, keys.UNDELIVERABLE,
                       *(keys.wake(queue) for queue in queues), *queue_keys,
                       len(queues), repr(time()), int(self._token_taken),
                       max(1, int(self.undeliverable_max)),
                       len(self._acks_sent), *self._acks_sent]
        self._pending = str(command[0])
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        try:
            self.client.connection.send_command(*command)
        except BaseException:
            self._unsent_acks()
            raise
        return None

    def _brpop_read(self, **options: Any) -> bool:
        if not self.atomic_consume:
            return super()._brpop_read(**options)  # type: ignore[no-any-return]
        pending, self._pending = self._pending or "BRPOP", None
        try:
            try:
                reply = self.client.parse_response(self.client.connection, pending, **options)
            except NoScriptError:  # the server restarted or flushed its scripts: nothing
                self._script_known = False  # was taken; the next take sends the script
                self._unsent_acks()
                raise virtual.Empty() from None
            except self.connection_errors:
                self.client.connection.disconnect()  # the next poll reconnects
                self._unsent_acks()  # sent again: an acknowledgement applies once
                raise
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()  # the connection is idle: kombu's moment for AUTH
        if pending == "BRPOP":
            # a token (a message was published) or the timeout: look again either way
            self._waiting, self._token_taken = False, bool(reply)
            if reply:
                self._brpop_start()  # at once, not a turn of the event loop later
            raise virtual.Empty()
        self._acks_sent = []
        # taken right after a wait: the worker is not busy, so nothing is gained by
        # holding this task's result back for a group commit
        busy, self._token_taken = not self._token_taken, False
        self._script_known = True
        queue_key, item, set_aside = reply
        if set_aside:
            log.error("messages that are not kombu JSON were set aside, not delivered",
                      count=int(set_aside), key=keys.UNDELIVERABLE)
        if not item:
            self._waiting = True
            self._complete_deferred()  # idle: nothing waits for a group commit
            raise virtual.Empty()
        queue_key = bytes_to_str(queue_key)
        queue = queue_key.rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        payload = loads(bytes_to_str(item))
        tag = self._recorded_tag = payload["properties"]["delivery_tag"]
        member = f"{tag}|{queue_key}"
        if queue in self._no_ack_queues:
            # nobody acknowledges it (kombu would not have recorded it): settled now
            self.acknowledge(member)
        else:
            self._held[tag] = member
        try:
            # a solo worker's task runs here (deferral.py)
            with deferral.delivering(tag, group=busy):
                self.connection._deliver(payload, queue)
        finally:
            self._recorded_tag = None
        return True

    def _complete_deferred(self) -> None:
        """Write the journal rows that results and acknowledgements wait for, and send
        those acknowledgements (the wait command that follows carries none)."""
        try:
            deferral.before_wait()
        except Exception:  # never the consumer's end: the writer's thread writes them
            log.exception("journal rows not written before waiting")
        if self._acks:
            try:
                self.flush_acks()
            except RedisError as exc:  # sent with the next take or beat
                log.warning("acknowledgements not sent yet", error=str(exc)[:200])

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    # -- acknowledging: with the next take, or on their own -----------------------------
    def acknowledge(self, member: str) -> None:
        """Acknowledge the held ``member``: with the next take when one is about to be
        sent (the common case: a task ends and the consumer takes the next message), in
        a call of its own when the channel waits for a wake token. An acknowledgement
        that has not reached the server when the process dies leaves the message held:
        it is redelivered, and the outcome guard acknowledges it without running it
        again (its outcome is journaled before the task returns)."""
        with self._acks_lock:
            self._acks.append(member)
            if self._pending != "BRPOP" and not self._closing:
                return
        self.flush_acks()

    def acknowledge_parked(self, member: str) -> None:
        """An acknowledgement that waited for a journal row. The channel may have closed
        meanwhile (its connection was lost): the message then comes back once this
        consumer stops beating, and the outcome guard acknowledges it without running it."""
        if deferral.later(lambda: self.acknowledge_parked(member)):
            return  # after its result, written with the others of its group commit
        if self.closed or self.connection is None:
            log.info("acknowledgement after a lost connection: the message comes back and "
                     "is acknowledged without running again", member=member)
            return
        self.acknowledge(member)

    def flush_acks(self) -> None:
        """Send the acknowledgements waiting for a take (the heartbeat calls this every
        beat, so none waits longer than that)."""
        with self._acks_lock:
            acks, self._acks = self._acks, []
        if not acks:
            return
        try:
            with self.conn_or_acquire() as client:  # no queue keys: acknowledgements only
                _CONSUME(keys=[self.unacked_key, self.held_key, keys.UNDELIVERABLE],
                         args=[0, 0, 1, 1, len(acks), *acks], client=client)
        except BaseException:
            with self._acks_lock:
                self._acks[:0] = acks
            raise

    def _unsent_acks(self) -> None:
        """A take failed before its reply: its acknowledgements go with the next one
        (applying one twice does nothing the second time)."""
        with self._acks_lock:
            self._acks[:0], self._acks_sent = self._acks_sent, []

    def stop_beating(self) -> None:
        """This channel's connection is lost: what it holds goes back after the timeout."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.discard(self)
        mover, self._mover = self._mover, None
        if mover is not None:
            mover.release(self)

    def close(self) -> None:
        self._complete_deferred()
        try:
            self.flush_acks()
        except RedisError as exc:  # held: given back once this channel stops beating
            log.warning("acknowledgements not sent at close", error=str(exc)[:200])
        super().close()
        self.stop_beating()

    # -- publishing: each message with its wake token, in the same round trip ---------
    def create_publish_batch(self, max_size: int) -> PublishBatch:
        return PublishBatch(self, max_size)

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        batch = kwargs.get("_publish_batch")
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        due = schedule.due_of(message)
        if due is not None and due > time():  # kept in the schedule until due
            if batch is not None:
                batch.add(*schedule.add_command(message, queue, key, due))
                return
            with self.conn_or_acquire() as client:
                schedule.add(client, message, queue, key, due)
            return
        fence = schedule.take_fence()
        if fence is not None:  # a periodic entry's fire: published once (schedule.py)
            with self.conn_or_acquire() as client:
                schedule.fire(client, fence, message, queue, key, WAKE_TOKENS)
            return
        if batch is not None:  # ours (create_publish_batch): kombu adds the message's
            super()._put(queue, message, **kwargs)  # commands, the batch its token
            batch.wake(queue)
            return
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.lpush(key, dumps(message))
            if self._expires and queue in self._expires:
                for pri in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, pri), self._expires[queue])
            for name, *args in self._wake(queue):
                getattr(pipe, name)(*args)
            pipe.execute()

    def _wake(self, queue: str) -> list[tuple[Any, ...]]:
        """The commands that add a message's wake token (and now and then trim the list)."""
        self._published += 1
        commands: list[tuple[Any, ...]] = [("lpush", keys.wake(queue), 1)]
        if self._published % WAKE_TOKENS == 0:
            commands.append(("ltrim", keys.wake(queue), 0, WAKE_TOKENS - 1))
        return commands

    def _do_restore_message(self, payload: Any, exchange: str, routing_key: str,
                            pipe: Any, leftmost: bool = False) -> None:
        """kombu's, plus a wake token: a restored message wakes a consumer like a new one."""
        try:
            try:
                payload["headers"]["redelivered"] = True
                payload["properties"]["delivery_info"]["redelivered"] = True
            except KeyError:
                pass
            for queue in self._lookup(exchange, routing_key):
                pri = self._get_message_priority(payload, reverse=False)
                (pipe.lpush if leftmost else pipe.rpush)(
                    self._q_for_pri(queue, pri), dumps(payload))
                for name, *args in self._wake(queue):
                    getattr(pipe, name)(*args)
        except self.connection_errors:
            raise  # aborts the transaction, which would drop the message unrestored
        except Exception:
            log.exception("could not restore a message", exchange=exchange,
                          routing_key=routing_key)

    def _purge(self, queue: str) -> int:
        with self.conn_or_acquire() as client:
            client.delete(keys.wake(queue))
        return super()._purge(queue)  # type: ignore[no-any-return]

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        super()._delete(queue, *args, **kwargs)
        with self.conn_or_acquire() as client:
            client.delete(keys.wake(queue))


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


#: by name, not the class: the name is what ``Connection.info()`` reports, and the
#: worker's ``inspect stats`` reply must stay JSON (a class in it fails to encode)
TRANSPORT = f"{__name__}:Transport"


def keeps_delayed(broker_transport: Any) -> bool:
    """Whether an app whose ``broker_transport`` is this keeps delayed messages in the
    durable schedule (so countdowns and retry delays need not stay under the visibility
    timeout). Apps taskworks adopts keep the transport they had."""
    return broker_transport in (TRANSPORT, Transport)


def transport_for(broker_url: str) -> str | None:
    """This transport for a redis:// or rediss:// broker; None (kombu's choice) otherwise."""
    scheme = broker_url.split("://", 1)[0].lower() if "://" in broker_url else ""
    return TRANSPORT if scheme in SCHEMES else None
