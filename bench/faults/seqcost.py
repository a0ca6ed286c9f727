"""What sequencing costs a message write, on PostgreSQL (docs/benchmarks.md, "Delivery under
faults").

The code has no switch that turns sequencing off, so this measures the same write path with
and without it, in one process against one database, in alternating rounds:

- **sequenced**: ``chat.services.message_send_or_get``, as the REST view and the consumer call
  it: the conversation row's ``UPDATE ... RETURNING last_seq`` (its lock held to commit),
  the ``Message`` insert, the ``Event`` log insert, the emit after commit;
- **unsequenced**: the same transaction without the ``UPDATE`` and without the ``Event``
  insert (the message path before sequence numbers): ``Message`` insert, emit after commit.

Both build the same frame and emit through ``chat.events`` to a channel layer with no Redis
(no member listens: the emit is the same work in both). ``client_id`` is left out of both, so
what differs is sequencing alone. Writers are threads, each with its own connection, either
all on one conversation (they queue on its row lock: the worst case) or one conversation
each.

    python -m bench.faults.seqcost --database-url postgres://... [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in {None, ""}:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "realtime_project.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def _unsequenced_send(*, conversation: Any, sender_id: int, body: str) -> Any:
    from django.db import transaction

    from chat import events
    from chat.event_types import MessageEvent, event_frame
    from chat.models import Message
    from chat.serializers import message_body

    with transaction.atomic():
        message = Message.objects.create(conversation=conversation, sender_id=sender_id, body=body)
        frame = event_frame(
            MessageEvent(conversation_id=str(conversation.id), seq=0, message=message_body(message))
        )
        events.frame_emit_on_commit(
            frame=frame, groups=[events.conversation_group(conversation.id)], exclude_channel=None
        )
    return message


def _sequenced_send(*, conversation: Any, sender_id: int, body: str) -> Any:
    from chat.services import message_send_or_get

    message, _ = message_send_or_get(conversation=conversation, sender_id=sender_id, body=body)
    return message


def _round(path: str, *, writers: int, shared: bool, seconds: float, seed: Any) -> float:
    """Messages a second over ``writers`` threads for ``seconds``."""
    from django.db import connection

    from chat.models import Conversation

    send = _sequenced_send if path == "sequenced" else _unsequenced_send
    counts = [0] * writers
    start = threading.Barrier(writers + 1)
    stop_at = [0.0]

    def work(index: int) -> None:
        conv_info = seed["conversations"][0 if shared else index]
        conversation = Conversation.objects.get(pk=conv_info["id"])
        sender_id = int(conv_info["participant_ids"][0])
        send(conversation=conversation, sender_id=sender_id, body="warm-up")
        start.wait()
        while time.monotonic() < stop_at[0]:
            send(conversation=conversation, sender_id=sender_id, body=f"w{index} {counts[index]}")
            counts[index] += 1
        connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + 3600
    start.wait()
    began = time.monotonic()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - began)


def sequencing_cost(*, seconds: float, rounds: int, writers: list[int]) -> list[dict[str, Any]]:
    from chat.management.commands.bench_seed import bench_seed

    seed = bench_seed(users=2 * max(writers), size=2, prefix="seqcost")
    results = []
    for count in writers:
        for shared in (True, False) if count > 1 else (True,):
            rates: dict[str, list[float]] = {"sequenced": [], "unsequenced": []}
            for index in range(rounds):
                # Alternate which goes first: the database warms up and the machine's load
                # drifts during a run.
                order = ["sequenced", "unsequenced"][:: 1 if index % 2 == 0 else -1]
                for path in order:
                    rates[path].append(
                        _round(path, writers=count, shared=shared, seconds=seconds, seed=seed)
                    )
            with_seq = sum(rates["sequenced"]) / rounds
            without = sum(rates["unsequenced"]) / rounds
            results.append(
                {
                    "writers": count,
                    "conversations": 1 if shared else count,
                    "sequenced_per_s": round(with_seq, 1),
                    "unsequenced_per_s": round(without, 1),
                    "slower_percent": round(100 * (1 - with_seq / without), 1),
                    "rounds": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True, help="postgres://... (a scratch db)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=2, help="per path and layout")
    parser.add_argument("--writers", default="1,4", help="comma-separated thread counts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    _setup(args.database_url)
    results = sequencing_cost(
        seconds=args.seconds,
        rounds=args.rounds,
        writers=[int(w) for w in args.writers.split(",")],
    )
    if args.json:
        print(json.dumps(results))
    else:
        for row in results:
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
