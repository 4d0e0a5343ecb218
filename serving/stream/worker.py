"""The streaming worker: micro-batches from a broker through the predictor core, results out, then ack.

Order per batch: decode -> validate (the core; a bad record is dead-lettered with the core's reason, the
rest of the batch goes on) -> predict -> publish results and dead letters (idempotent by input id) -> ack.
A crash anywhere before the ack leaves the batch pending; another worker reclaims it after the claim idle
time and the idempotent publish keeps the output to one result per input (at-least-once delivery,
exactly-once output). A message handed out more than `max_deliveries` times (one that keeps killing its
workers) is dead-lettered instead of being tried again.

One record never takes its batch down: anything a record makes the decoder, the validation or the model
raise dead-letters that record with the reason and the rest of the batch goes on. And a message handed
out again after a worker died is retried on its own (reclaimed one at a time; Kafka seeks back past it),
so a record that kills the process outright can only use up its own deliveries, never its neighbours'.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.core.predictor import Predictor, RequestError
from serving.stream.broker import Broker, Message, Outgoing
from serving.stream.codec import MalformedMessage, decode_input, encode_dead_letter, encode_result


@dataclass
class WorkerStats:
    batches: int = 0
    messages: int = 0
    results: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    reclaimed: int = 0
    started: float = field(default_factory=time.monotonic)

    def explain(self) -> str:
        return (
            f"{self.messages} messages in {self.batches} batches: {self.results} results "
            f"({self.duplicates} duplicates suppressed), {self.dead_letters} dead letters, {self.reclaimed} reclaimed "
            f"from other consumers, {time.monotonic() - self.started:.1f} s"
        )


class StreamWorker:
    def __init__(
        self,
        predictor: Predictor,
        broker: Broker,
        *,
        batch: int = 64,
        consumer: str = "",
        max_deliveries: int = 5,
    ):
        self.predictor = predictor
        self.broker = broker
        self.batch = batch
        self.max_deliveries = max_deliveries
        self.consumer = consumer or getattr(broker, "consumer", "worker")
        self.stats = WorkerStats()

    def handle(self, messages: list[Message]) -> None:
        """One micro-batch, acknowledged only after every message's result or dead letter is written.

        Errors of the broker propagate (nothing is acknowledged, the batch is redelivered); errors one
        record causes do not."""
        dead: list[Outgoing] = []
        good: list[Message] = []
        records: list[Any] = []
        for message in messages:
            if message.deliveries > self.max_deliveries:  # a poison message: it keeps taking workers down
                reason = f"delivered {message.deliveries} times without being acknowledged (limit {self.max_deliveries})"
                dead.append(encode_dead_letter(message, reason, self.consumer))
                continue
            try:
                records.append(decode_input(message))
                good.append(message)
            except MalformedMessage as e:
                dead.append(encode_dead_letter(message, str(e), self.consumer))
        X, good = self._validate(good, records, dead)
        results: list[Outgoing] = []
        classifier = self.predictor.is_classifier
        for message, label, probs in self._predict(good, X, dead):
            results.append(
                encode_result(
                    message, label, probs if classifier else None, self.predictor.digest, self.consumer
                )
            )
        written = self.broker.publish(results)
        self.stats.dead_letters += self.broker.dead_letter(dead)
        self.broker.ack([m.id for m in messages])
        self.stats.batches += 1
        self.stats.messages += len(messages)
        self.stats.results += written
        self.stats.duplicates += len(results) - written

    def _validate(
        self, messages: list[Message], records: list[Any], dead: list[Outgoing]
    ) -> tuple[Any, list[Message]]:
        if not messages:
            return None, []
        try:
            X = self.predictor.validate(records)
            if len(X) == len(messages):
                return X, messages
        except Exception:  # some record is bad: find which, one by one
            pass
        keep: list[Message] = []
        rows = []
        for message, record in zip(messages, records, strict=True):
            try:
                row = self.predictor.validate([record] if isinstance(record, dict) else record)
                if len(row) != 1:
                    raise RequestError(f"{len(row)} rows in one message; a message holds one record")
                rows.append(row)
                keep.append(message)
            except Exception as e:  # whatever one record raises is that record's
                dead.append(encode_dead_letter(message, _reason(e), self.consumer))
        if not keep:
            return None, []
        import numpy as np

        return np.vstack(rows), keep

    def _predict(
        self, messages: list[Message], X: Any, dead: list[Outgoing]
    ) -> list[tuple[Message, Any, Any]]:
        """(message, label, probabilities) for each message the model answers. When the batch fails, each
        record is tried alone and those that fail alone are dead-lettered; when every one of them fails,
        the model (not the data) is broken and the error propagates: nothing is acknowledged."""
        if not messages:
            return []
        try:
            prediction = self.predictor.predict(X)
            return list(
                zip(messages, prediction.labels.tolist(), prediction.probabilities.tolist(), strict=True)
            )
        except Exception as batch_error:
            answered: list[tuple[Message, Any, Any]] = []
            failed: list[tuple[Message, Exception]] = []
            for i, message in enumerate(messages):
                try:
                    one = self.predictor.predict(X[i : i + 1])
                    answered.append((message, one.labels.tolist()[0], one.probabilities.tolist()[0]))
                except Exception as e:
                    failed.append((message, e))
            if not answered:
                raise batch_error
            dead.extend(
                encode_dead_letter(m, f"the model failed on it: {_reason(e)}", self.consumer)
                for m, e in failed
            )
            return answered

    def run(
        self,
        *,
        stop: Callable[[], bool] = lambda: False,
        block_ms: int = 1000,
        max_idle_s: float | None = None,
        claim_every_s: float = 1.0,
    ) -> WorkerStats:
        """Consume until `stop()` or, with `max_idle_s`, until nothing arrived for that long."""
        self.broker.ensure_group()
        last_work = time.monotonic()
        next_claim = 0.0
        while not stop():
            messages: list[Message] = []
            if time.monotonic() >= next_claim:
                # One at a time: these were in flight when a worker died, maybe killed by one of them.
                messages = self.broker.reclaim(1)
                self.stats.reclaimed += len(messages)
                if not messages:
                    next_claim = time.monotonic() + claim_every_s
            if not messages:
                messages = self.broker.read(self.batch, block_ms)
            if messages:
                self.handle(messages)
                last_work = time.monotonic()
            elif max_idle_s is not None and time.monotonic() - last_work >= max_idle_s:
                break
        return self.stats


def _reason(error: Exception) -> str:
    """A dead letter's reason from what a record made the core raise."""
    if isinstance(error, RequestError):
        return str(error).removeprefix("row 0: ").removeprefix("row 0, ")
    return f"{type(error).__name__}: {str(error)[:300]}"
