"""The Flower transport: the unchanged federation talks to ClientApps through a Flower ``Grid``.

Each exchange lays every client's request out as records in one ``query.reward`` (or
``query.competence``) message to that client's node, pushes them all at once and pulls the replies
until the round's time limit. A client that has not answered by then is *missing* for the round
(a ``timeout`` delivery):
the federation excludes it, replaces it where the selector can rank, and marks it in the metrics.
The message's TTL is the same limit, so Flower drops work nobody waits for any more.

Nodes are discovered with the Grid and introduced by a ``query.profile`` handshake (client name,
domains served, what it can evaluate). Nodes that leave are dropped from routing; a client that
missed a round is skipped and probed again in the background every ``rejoin_interval_s``; when it
answers it is routed to again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Literal

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedgrpo import protocol
from fedgrpo.config import FlowerSettings
from fedgrpo.flower.codec import (
    PROFILE_TYPE,
    REQUEST_TYPES,
    content_bytes,
    read_payload,
    read_profile,
    read_stats,
    to_records,
)
from fedgrpo.protocol import ErrorReply, ProtocolError
from fedgrpo.transport import Delivery, Transport

log = logging.getLogger(__name__)


def wait_until(done: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    """Polls ``done`` until it holds (True) or ``timeout_s`` passes (False): how a server waits for
    SuperNodes to join, since a Grid has no call that blocks until they do."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True


class FlowerTransport(Transport):
    """Reaches ClientApps through a Flower Grid (Simulation or Deployment Engine alike).

    ``identity="registered"`` (deployment): a client's name is the one its operator registered for
    the SuperNode's key (``flwr supernode register KEY.pub --name NAME``); the SuperLink authenticates
    every node by that key, so a node cannot answer as another. A node without a registered name,
    one whose profile claims another name, or a second node under a name already serving is refused
    and counted. ``identity="profile"`` (simulation, where the experimenter runs every virtual
    client): the name a client's profile gives.
    """

    def __init__(
        self,
        grid: Grid,
        settings: FlowerSettings,
        expected_clients: int = 1,
        identity: Literal["registered", "profile"] = "profile",
    ) -> None:
        self._grid = grid
        self._settings = settings
        self._identity = identity
        self._nodes: dict[str, int] = {}  # client name -> node id, for clients we route to
        self._node_names: dict[int, str] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self._suspended: dict[str, float] = {}  # client -> when it was last probed
        self._probes: dict[str, str] = {}  # message id -> client being probed
        self._unable: dict[int, str] = {}  # refused node -> the client it is, if its own profile failed
        self.refusals: dict[int, str] = {}  # node -> why its profile was refused (not asked again)
        self._unanswered: dict[int, float] = {}  # node -> when its profile went unanswered
        self.counts: Counter = Counter()
        self.client_rejected: defaultdict[str, Counter] = defaultdict(Counter)  # by client and reason
        self.events: list[dict[str, Any]] = []
        self._started = time.perf_counter()
        self._wait_for(expected_clients)
        self.startup_seconds = time.perf_counter() - self._started

    # -- membership ---------------------------------------------------------------------------------
    def _wait_for(self, expected: int) -> None:
        def enough() -> bool:  # each client joined or cannot; one refused for who it is counts as none
            self._refresh()
            unable = {c for c in self._unable.values() if c} - set(self._nodes)
            if not self._nodes and len(unable) >= expected:
                raise RuntimeError(f"every Flower node refused to serve as a client: {self.refusals}")
            return len(self._nodes) + len(unable) >= expected

        if not wait_until(enough, self._settings.connect_timeout_s) and not self._nodes:
            raise RuntimeError(
                f"no Flower client joined within {self._settings.connect_timeout_s:.0f} s "
                "(flower.connect_timeout_s); are the SuperNodes running and registered?"
            )
        if (joined := len(self._nodes)) < expected:
            log.warning("%d of %d clients joined (refused: %s); going on", joined, expected, self.refusals)
        log.info("Flower clients: %s", {n: self.profiles[n] for n in sorted(self._nodes)})

    def _refresh(self) -> None:
        """Follow the Grid's node list: profile new nodes, drop gone ones, probe suspended clients."""
        online = set(self._grid.get_node_ids())
        for name, node in list(self._nodes.items()):
            if node not in online:
                self._nodes.pop(name)
                self._node_names.pop(node, None)  # a SuperNode back under the same id is profiled again
                self._suspended.pop(name, None)
                self._event("left", name, "its SuperNode is no longer connected")
        now = time.monotonic()
        new = [
            n
            for n in online
            if n not in self._node_names
            and n not in self.refusals
            and now - self._unanswered.get(n, -1e9) >= self._settings.rejoin_interval_s
        ]
        if new:
            self._profile(new)
        self._check_probes()

    def _profile(self, node_ids: list[int]) -> None:
        messages = [
            Message(
                RecordDict(), dst_node_id=n, message_type=PROFILE_TYPE, ttl=self._settings.profile_timeout_s
            )
            for n in node_ids
        ]
        replies = self._send_and_receive(messages, self._settings.profile_timeout_s)[1].values()
        registered = self._registered_names() if self._identity == "registered" else {}
        answered = {r.metadata.src_node_id for r in replies}
        for node in set(node_ids) - answered:
            self._unanswered[node] = time.monotonic()
            log.warning("node %s did not answer its profile query; asking again later", node)
        for reply in replies:
            node = reply.metadata.src_node_id
            profile: dict[str, Any] | None = None
            try:
                if reply.has_error():
                    raise ProtocolError(f"Flower error {reply.error.code}: {reply.error.reason}")
                if content_bytes(reply.content) > self._settings.max_message_bytes:
                    raise ProtocolError("profile reply exceeds flower.max_message_bytes")
                profile = read_profile(reply.content)
                name = self._name_of(node, profile["name"], registered)  # refused for who it is
            except ProtocolError as err:
                if profile is None:  # its own profile failed: the client it is cannot serve this run
                    self.counts["profile_rejected"] += 1
                    self._unable[node] = registered.get(node, f"node {node}")  # "": registered unnamed
                self.refusals[node] = str(err)
                log.warning("node %s refused as a client: %s", node, err)
                continue
            rejoined = name in self.profiles
            self._nodes[name], self._node_names[node] = node, name
            self.profiles[name] = {**profile, "name": name}
            self._event("rejoined" if rejoined else "joined", name, f"node {node}")

    def _registered_names(self) -> dict[int, str]:
        """Node id -> the name its operator registered with its key (empty where none was given)."""
        return {int(n.node_id): str(getattr(n, "name", "") or "") for n in self._grid.get_nodes()}

    def _name_of(self, node: int, claimed: str, registered: dict[int, str]) -> str:
        """The client name a node serves under; raises ProtocolError (counted) when it may not serve."""
        if self._identity == "registered":
            name = registered.get(node, "")
            if not name:
                self.counts["unnamed_refused"] += 1
                raise ProtocolError(
                    "its SuperNode key was registered without a name: register it with "
                    "`flwr supernode register KEY.pub --name CLIENT-NAME`"
                )
            if claimed and claimed != name:
                self.counts["impostor_refused"] += 1
                raise ProtocolError(f"registered as {name!r} but its profile claims {claimed!r}")
        elif not claimed:
            self.counts["profile_rejected"] += 1
            raise ProtocolError("profile without a client name")
        else:
            name = claimed
        if name in self._nodes and self._nodes[name] != node:
            self.counts["duplicate_name_refused"] += 1
            raise ProtocolError(f"client name {name!r} is already served by node {self._nodes[name]}")
        return name

    def _check_probes(self) -> None:
        """Resume clients that answered their probe; send a new probe to those due for one."""
        if self._probes:
            for reply in self._grid.pull_messages(list(self._probes)):
                name = self._probes.pop(reply.metadata.reply_to_message_id, None)
                if name in self._suspended and not reply.has_error():
                    self._suspended.pop(name)
                    self._event("rejoined", name, "answered again after missing a round")
        now = time.monotonic()
        due = [n for n, t in self._suspended.items() if now - t >= self._settings.rejoin_interval_s]
        probes = []
        for name in due:
            if name in self._probes.values() or name not in self._nodes:
                continue
            self._suspended[name] = now
            probes.append(
                (name, self._message(RecordDict(), name, PROFILE_TYPE, self._settings.profile_timeout_s))
            )
        if probes:
            ids = list(self._grid.push_messages([m for _, m in probes]))
            self._probes.update({i: name for i, (name, _) in zip(ids, probes, strict=True) if i})

    def _event(self, what: str, client: str, detail: str) -> None:
        self.events.append(
            {"t": round(time.perf_counter() - self._started, 2), "event": what, "client": client}
        )
        self.counts[f"clients_{what}"] += 1
        log.info("client %s %s (%s)", client, what, detail)

    @property
    def client_names(self) -> list[str]:
        self._refresh()
        return sorted(n for n in self._nodes if n not in self._suspended)

    # -- exchange -----------------------------------------------------------------------------------
    def _message(self, content: RecordDict, client: str, message_type: str, ttl: float) -> Message:
        return Message(content, dst_node_id=self._nodes[client], message_type=message_type, ttl=max(ttl, 1.0))

    def _send_and_receive(
        self, messages: list[Message], timeout: float
    ) -> tuple[list[str], dict[str, Message]]:
        """Push all, pull until every reply is in or ``timeout``.

        Returns the sent message ids in the order of ``messages`` (empty where Flower refused one) and
        the replies keyed by sent message id.
        """
        if not messages:
            return [], {}
        ids = list(self._grid.push_messages(messages))
        self.counts["messages_sent"] += len(messages)
        replies = self._pull({i for i in ids if i}, timeout)
        self.counts["messages_received"] += len(replies)
        return ids, replies

    def exchange(self, requests: Mapping[str, protocol.Message]) -> dict[str, Delivery]:
        out: dict[str, Delivery] = {}
        outgoing: list[tuple[str, int, Message]] = []  # (client, request bytes, Flower message)
        competence = False
        for name, request in requests.items():
            content = to_records(request)  # the request's one encoding, as Flower carries it
            size = len(read_payload(content))
            problem, message = self._prepare(name, request, content, size)
            if problem is not None or message is None:
                self.counts["requests_refused"] += 1
                out[name] = Delivery(name, None, size, 0, "client_failed", problem)
                continue
            competence |= message.metadata.message_type == REQUEST_TYPES["competence"]
            outgoing.append((name, size, message))
        s = self._settings
        timeout = s.competence_timeout_s if competence else s.reward_timeout_s
        for _, _, message in outgoing:
            message.metadata.ttl = max(timeout, 1.0)
        ids, replies = self._send_and_receive([m for _, _, m in outgoing], timeout)
        for mid, (name, size, _) in zip(ids, outgoing, strict=True):
            reply = replies.get(mid) if mid else None
            if reply is None:
                self.counts["timeouts"] += 1
                self._suspended.setdefault(name, time.monotonic())
                out[name] = Delivery(name, None, size, 0, "timeout", f"no answer within {timeout:.0f} s")
                continue
            out[name] = self._read_reply(name, size, reply)
        return out

    def _pull(self, waiting: set[str], timeout: float) -> dict[str, Message]:
        """Replies to ``waiting`` by sent message id; polls quickly at first and backs off to 0.2 s
        (Flower's own ``send_and_receive`` sleeps 3 s between pulls over HTTP, too slow per round)."""
        replies: dict[str, Message] = {}
        deadline, pause = time.monotonic() + timeout, 0.002
        while waiting and time.monotonic() < deadline:
            for reply in self._grid.pull_messages(list(waiting)):
                sent = reply.metadata.reply_to_message_id
                if sent in waiting:
                    waiting.discard(sent)
                    replies[sent] = reply
            if waiting:
                time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
                pause = min(pause * 1.5, 0.2)
        return replies

    def _prepare(
        self, name: str, request: protocol.Message, content: RecordDict, size: int
    ) -> tuple[str | None, Message | None]:
        if name not in self._nodes:
            return f"client {name!r} is not connected", None
        if size > self._settings.max_message_bytes:
            return f"request of {size} bytes exceeds flower.max_message_bytes", None
        if request.kind not in REQUEST_TYPES:
            return f"cannot send a {request.kind!r} message", None
        self.counts["record_bytes_down"] += content_bytes(content)
        return None, self._message(content, name, REQUEST_TYPES[request.kind], 1.0)

    def _read_reply(self, name: str, request_bytes: int, reply: Message) -> Delivery:
        """The reply as a protocol message, or why it was refused (counted and logged, never raised).

        A client's error reply is passed on as it is (the server counts it as the client's error);
        any other reply must report the same byte counts as the server measures.
        """
        if reply.has_error():  # Flower could not deliver (node gone, message expired, ClientApp died)
            self.counts["flower_errors"] += 1
            self._suspended.setdefault(name, time.monotonic())  # probed until it answers again
            error = f"Flower error {reply.error.code}: {reply.error.reason}"
            log.warning("no reply from %s: %s", name, error)
            return Delivery(name, None, request_bytes, 0, "client_failed", error)
        try:
            size = content_bytes(reply.content)
            self.counts["record_bytes_up"] += size
            if size > self._settings.max_message_bytes:
                raise ProtocolError(f"reply of about {size} bytes exceeds flower.max_message_bytes")
            payload = read_payload(reply.content)
            message = protocol.decode(payload, self._settings.max_message_bytes, name)
            stats = read_stats(reply.content)
        except ProtocolError as err:
            self.counts["replies_rejected"] += 1
            log.warning("rejected Flower reply from %s: %s", name, err)
            return Delivery(name, None, request_bytes, 0, "malformed_reply", f"bad Flower reply: {err}")
        reply_bytes = len(payload)
        self.client_rejected[name].update(stats["rejected"])  # this message's process only: add up
        self.counts["client_rejected_total"] += sum(stats["rejected"].values())
        if isinstance(message, ErrorReply):
            return Delivery(name, message, request_bytes, reply_bytes)
        if stats["request_bytes"] != request_bytes or stats["reply_bytes"] != reply_bytes:
            self.counts["byte_mismatches"] += 1
            log.warning("byte count mismatch with %s: %s vs %d/%d", name, stats, request_bytes, reply_bytes)
            return Delivery(name, None, request_bytes, reply_bytes, "malformed_reply", "byte counts differ")
        self.counts["bytes_verified"] += request_bytes + reply_bytes
        return Delivery(name, message, request_bytes, reply_bytes)

    def summary(self) -> dict[str, Any]:
        return {
            "transport": "flower",
            "startup_seconds": round(self.startup_seconds, 3),
            "counts": dict(sorted(self.counts.items())),
            "client_rejected": {n: dict(c) for n, c in sorted(self.client_rejected.items()) if c},
            "clients": {n: self.profiles[n] for n in sorted(self.profiles)},
            "events": self.events,
        }
