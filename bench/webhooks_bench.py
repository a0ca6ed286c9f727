"""Webhooks benchmark (docs/benchmarks.md, "Webhooks").

1. Drain: a backlog of ``--events`` outbox events (over 1,000 conversations) sent to a local
   receiver on 127.0.0.1 by one (or ``--senders``) sender(s): events/s.
2. Write cost: ``message_send`` on one conversation of three participants, webhooks off and
   on, in alternating rounds: the median time per message and what webhooks add.

Run against a database of its own (it migrates it, and empties the outbox):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> .venv/bin/python -m bench.webhooks_bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
SECRET = "bench-webhook-secret"


class Receiver:
    """Answers 204 to every call and counts the events (a cheap byte count, not a parse)."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls += 1
                receiver.bytes += len(body)
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def backlog(events: int, url: str) -> None:
    from webhooks.models import OutboxEvent

    now = datetime.now(UTC)
    conversations = [str(uuid.uuid4()) for _ in range(1000)]
    rows = [
        OutboxEvent(
            event_id=uuid.uuid4(),
            name="member.added",
            stream=conversations[i % len(conversations)],
            payload={
                "conversation_id": conversations[i % len(conversations)],
                "user_id": str(i),
                "by": "1",
                "seq": i // len(conversations) + 1,
            },
            target=url,
            created_at=now,
            next_attempt_at=now,
        )
        for i in range(events)
    ]
    OutboxEvent.objects.bulk_create(rows, batch_size=5000)


async def drain(senders: int) -> None:
    from webhooks.sender import WebhookSender

    async def one() -> None:
        sender = WebhookSender()
        while await sender.run_once():
            pass

    await asyncio.gather(*(one() for _ in range(senders)))


def write_round(conversation: Any, sender_id: int, count: int) -> float:
    from chat import services

    started = time.perf_counter()
    for i in range(count):
        services.message_send(conversation=conversation, sender_id=sender_id, body=f"m{i}")
    return (time.perf_counter() - started) / count


def statement_ms(conversation: Any, sender_id: int, webhooks: bool) -> float:
    """The database's own time (planning + execution) for one message statement, rolled back."""
    from django.db import connection, transaction

    from chat import services

    _, _, params = services._message_new(
        conversation_id=conversation.id, sender_id=sender_id, body="x", client_id=None, origin=""
    )
    if not webhooks:
        params = {k: v for k, v in params.items() if not k.startswith("wh_")}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN (ANALYZE, SUMMARY) " + services._message_statement(webhooks), params
        )
        lines = [row[0] for row in cursor.fetchall()]
        transaction.set_rollback(True)
    return sum(
        float(line.split(":")[1].split()[0])
        for line in lines
        if line.startswith(("Planning Time", "Execution Time"))
    )


def statement_round_ms(conversation: Any, sender_id: int, webhooks: bool, count: int) -> float:
    """Wall time of the message statement alone, each in its own committed transaction."""
    from django.db import connection, transaction

    from chat import services

    started = time.perf_counter()
    for _ in range(count):
        _, _, params = services._message_new(
            conversation_id=conversation.id,
            sender_id=sender_id,
            body="x",
            client_id=None,
            origin="",
        )
        if not webhooks:
            params = {k: v for k, v in params.items() if not k.startswith("wh_")}
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(services._message_statement(webhooks), params)
    return (time.perf_counter() - started) / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--messages", type=int, default=200, help="per round")
    parser.add_argument("--rounds", type=int, default=20, help="pairs (0: no write test)")
    args = parser.parse_args()

    receiver = Receiver()
    os.environ["WEBHOOK_URLS"] = receiver.url
    os.environ["WEBHOOK_SECRET"] = SECRET
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    from chat.models import Conversation, Participant
    from webhooks.models import OutboxEvent

    call_command("migrate", verbosity=0)
    OutboxEvent.objects.all().delete()
    print(f"database: {connection.vendor}; host: {socket.gethostname()}; uptime:", flush=True)
    print(os.popen("uptime").read().strip())

    if args.events > 0:
        backlog(args.events, receiver.url)
        started = time.perf_counter()
        asyncio.run(drain(args.senders))
        seconds = time.perf_counter() - started
        left = OutboxEvent.objects.count()
        print(
            f"drain: {args.events} events, {args.senders} sender(s), {receiver.calls} calls, "
            f"{seconds:.2f} s, {args.events / seconds:,.0f} events/s, {left} left"
        )

    if args.rounds <= 0:
        receiver.stop()
        return
    users = get_user_model().objects
    people = [users.get_or_create(username=f"wh-bench-{n}")[0] for n in range(3)]
    conversation = Conversation.objects.create(title="webhooks bench")
    Participant.objects.bulk_create(
        [Participant(conversation=conversation, user_id=p.pk) for p in people]
    )
    on = {**settings.REALTIME}
    off = {**settings.REALTIME, "WEBHOOK_URLS": []}
    timings: dict[str, list[float]] = {"off": [], "on": []}
    write_round(conversation, people[0].pk, 100)  # warm-up
    # Paired rounds in alternating order, so that the machine's drift (it is shared) falls
    # on both settings alike; the result is the median of the pairs' ratios.
    for n in range(args.rounds):
        pair = (("off", off), ("on", on)) if n % 2 == 0 else (("on", on), ("off", off))
        for label, values in pair:
            settings.REALTIME = values
            timings[label].append(write_round(conversation, people[0].pk, args.messages))
    settings.REALTIME = on
    if connection.vendor == "postgresql":
        server: dict[bool, list[float]] = {False: [], True: []}
        for n in range(400):
            flag = n % 2 == 1
            server[flag].append(statement_ms(conversation, people[0].pk, flag))
        walls: dict[bool, list[float]] = {False: [], True: []}
        for n in range(40):
            for flag in (False, True) if n % 2 == 0 else (True, False):
                walls[flag].append(statement_round_ms(conversation, people[0].pk, flag, 50))
        print(
            f"message statement alone, wall time with its commit (medians of 40 paired rounds "
            f"of 50): off {statistics.median(walls[False]):.3f} ms, "
            f"on {statistics.median(walls[True]):.3f} ms"
        )
        print(
            f"message statement, database time (EXPLAIN ANALYZE, median of 200 each): "
            f"off {statistics.median(server[False]):.3f} ms, "
            f"on {statistics.median(server[True]):.3f} ms"
        )
    ratios = [b / a for a, b in zip(timings["off"], timings["on"], strict=True)]
    off_ms = statistics.median(timings["off"]) * 1000
    on_ms = statistics.median(timings["on"]) * 1000
    print(
        f"message_send: off {off_ms:.3f} ms, on {on_ms:.3f} ms per message (medians of "
        f"{args.rounds} paired rounds of {args.messages}); webhooks add "
        f"{100 * (statistics.median(ratios) - 1):+.1f} % (median of the pairs' ratios; "
        f"quartiles {100 * (statistics.quantiles(ratios, n=4)[0] - 1):+.1f} % .. "
        f"{100 * (statistics.quantiles(ratios, n=4)[2] - 1):+.1f} %)"
    )
    OutboxEvent.objects.all().delete()
    conversation.delete()
    receiver.stop()


if __name__ == "__main__":
    main()
