"""Privacy: deleting a user, redacting personal data, where the metrics listen, secrets.

- ``delete_user`` removes the user from memory, writes tombstones to the state and
  recommendation topics, and the user does not come back when a worker restarts
  (``interest inspect`` says deleted); the other users are restored intact.
- E-mail addresses, phone and card numbers are redacted before text reaches the encoder
  (a recording encoder sits where the real one would) and before it is kept in state
  or logged.
- ``/metrics`` binds to ``metrics.host``, not to every interface.
- SASL/TLS settings reach the Kafka clients; the password never shows in a repr or a log.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest

from consumers import inspect as inspect_command
from interest_core.encoder import HashingEncoder
from interest_core.settings import Settings, settings_from
from producers.kafka_client import client_kwargs
from producers.synthetic import generate_dataset
from producers.topics import create_topics
from tests.integration.survival import (
    committed_everything,
    expected_counts,
    publish_catalog,
    publish_raw,
    read_topic,
    state_counts,
    wait_until,
    worker_thread,
)

SECRET = "hunter2-do-not-log"
EMAIL = "jane.doe+films@example.com"
PHONE = "+1 (415) 555-0100"
CARD = "4111 1111 1111 1111"  # a Luhn-valid test card number
_OUR_LOGGERS = {"consumers", "producers", "interest_core"}
PII_TEXT = f"mail me at {EMAIL} or call {PHONE}; my card is {CARD}. jazz piano please"


class RecordingEncoder:
    """The hashing encoder, remembering every text it is asked to encode."""

    def __init__(self) -> None:
        self.inner = HashingEncoder()
        self.name = self.inner.name
        self.dim = self.inner.dim
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner.encode(texts)


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a listening TCP socket on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            octets = [str(int(address[i : i + 2], 16)) for i in range(6, -1, -2)]
            found.add(".".join(octets))
    return found


def _event(user: str, n: int, kind: str, **fields: object) -> tuple[bytes, bytes]:
    event = {"event_id": f"p-{user}-{n}", "user_id": user, "ts": 1_700_100_000.0 + n}
    event.update(type=kind, **fields)
    return user.encode(), orjson.dumps(event)


@pytest.mark.integration
def test_delete_user_redaction_and_metrics_address(
    kafka_settings: Settings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = kafka_settings.replace(
        encoder={"backend": "hashing"},
        metrics={"host": "127.0.0.2", "port": 0},
        kafka={"sasl_plain_username": "svc", "sasl_plain_password": SECRET},
    )
    data = generate_dataset(users=12, items=80, events=300, seed=2)
    create_topics(settings)
    publish_catalog(settings, data.catalog)
    item = str(data.catalog[0]["item_id"])
    victim, keeper = "victim-1", "keeper-1"
    personal = [
        _event(victim, 1, "click", item_id=item),
        _event(victim, 2, "search", text=PII_TEXT),
        _event(keeper, 3, "chat", text=f"ping {EMAIL} about saxophone records"),
        _event(keeper, 4, "view", item_id=item),
    ]
    background = [(str(e["user_id"]).encode(), orjson.dumps(e)) for e in data.events]
    encoder = RecordingEncoder()
    caplog.set_level(logging.DEBUG)

    with worker_thread(settings, encoder) as running:
        worker = running.worker
        assert worker.metrics_port
        # Bound to the configured address only (not 0.0.0.0, not 127.0.0.1).
        assert _listening_addresses(worker.metrics_port) == {"127.0.0.2"}
        publish_raw(settings, settings.topics.events, [*background, *personal])
        wait_until(lambda: committed_everything(settings), 90.0, "the first log is applied")
        assert worker.engine.describe_user(victim) is not None
        publish_raw(settings, settings.topics.events, [_event(victim, 5, "delete_user")])
        wait_until(lambda: committed_everything(settings), 60.0, "the deletion is applied")
        assert worker.engine.describe_user(victim) is None

    # The encoder never saw the personal data, only the redacted text.
    joined = "\n".join(encoder.seen)
    for secret in (EMAIL, "415", "555-0100", "4111", "jane.doe"):
        assert secret not in joined
    assert any("[email]" in t and "[card]" in t and "[phone]" in t for t in encoder.seen)
    assert any("[email]" in t and "saxophone" in t for t in encoder.seen)

    # Tombstones: the victim's latest record on both topics is a null value.
    for topic in (settings.topics.state, settings.topics.recommendations):
        latest = {r.key: r.value for r in read_topic(settings, topic)}
        assert victim.encode() in latest and latest[victim.encode()] is None, topic
        assert latest[keeper.encode()] is not None, topic

    # A restarted worker restores the others, not the deleted user.
    with worker_thread(settings, RecordingEncoder()) as again:
        engine = again.worker.engine
        wait_until(lambda: engine.describe_user(keeper) is not None, 60.0, "keeper restored")
        assert engine.describe_user(victim) is None
        described = engine.describe_user(keeper)
        assert described is not None
        assert all(EMAIL not in text for text in described["recent_texts"])
        assert any("[email]" in text for text in described["recent_texts"])
        assert victim not in engine.users
    counts, deleted = state_counts(settings)
    assert victim in deleted and victim not in counts
    wanted = expected_counts(orjson.loads(v) for _, v in [*background, *personal])
    wanted.pop(victim)
    assert counts == wanted

    # `interest inspect USER` reports the user as deleted and fails.
    capsys.readouterr()
    args = argparse.Namespace(user=victim, all=False, json=True, include_deleted=False)
    assert inspect_command.run(args, settings) == 1
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["deleted"] is True and "events_by_type" not in shown

    # Nothing personal or secret was logged by our code (kafka-python's own DEBUG logging
    # dumps request bytes, payloads included: docs/GUARANTEES.md says to keep it off).
    leaks = [
        (r.name, r.getMessage()[:300])
        for r in caplog.records
        if r.name.split(".")[0] in _OUR_LOGGERS
        and any(secret in r.getMessage() for secret in (SECRET, EMAIL, CARD))
    ]
    assert not leaks


# --------------------------------------------------------------------------- settings, no broker


def test_sasl_and_tls_settings_reach_the_clients() -> None:
    settings = settings_from(
        {
            "kafka": {
                "bootstrap_servers": "k1:9093, k2:9093",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "svc",
                "ssl_cafile": "/etc/ca.pem",
                "ssl_certfile": "/etc/client.pem",
                "ssl_keyfile": "/etc/client.key",
            }
        },
        {"INTEREST__KAFKA__SASL_PLAIN_PASSWORD": SECRET},
    )
    kwargs = client_kwargs(settings.kafka)
    assert kwargs["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["sasl_plain_password"] == SECRET
    assert kwargs["ssl_cafile"] == "/etc/ca.pem"
    assert kwargs["ssl_certfile"] == "/etc/client.pem"
    assert kwargs["ssl_keyfile"] == "/etc/client.key"


def test_plaintext_sends_no_credentials() -> None:
    settings = Settings().replace(kafka={"sasl_plain_username": "svc", "sasl_plain_password": "x"})
    kwargs = client_kwargs(settings.kafka)
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl_", "ssl_")) for key in kwargs)


def test_the_password_never_shows_in_a_repr() -> None:
    settings = settings_from({}, {"INTEREST__KAFKA__SASL_PLAIN_PASSWORD": SECRET})
    assert settings.kafka.sasl_plain_password == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in repr(settings.kafka)
    assert SECRET not in str(settings)
