"""`sluice stream ...`: consume a broker stream with a consumer group, predict in micro-batches, publish results."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from sluice.console import console, err_console, report
from sluice.stopping import saying, stop_on_signals

app = typer.Typer(
    help="Streaming predictions: a stream in, a stream out (Redis Streams; Kafka for clusters).",
    no_args_is_help=True,
)


@app.command("run")
def run(
    model: Annotated[str, typer.Option("--model", help="Bundle path, file:// URI or models:/name@alias.")],
    broker: Annotated[
        str, typer.Option("--broker", help="redis://host:port/db (embedded default) or kafka://host:port.")
    ],
    input: Annotated[str, typer.Option("--input", help="Input stream (Kafka: topic).")],
    output: Annotated[str, typer.Option("--output", help="Output stream (Kafka: a compacted topic).")],
    group: Annotated[
        str, typer.Option("--group", help="Consumer group: workers in one group share the load.")
    ],
    consumer: Annotated[
        str | None, typer.Option("--consumer", help="This worker's name in the group (default: host-pid).")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Messages per micro-batch.")] = 64,
    dead_letter: Annotated[
        str | None, typer.Option("--dead-letter", help="Dead-letter stream (default: <input>:dead).")
    ] = None,
    claim_idle_ms: Annotated[
        int,
        typer.Option(
            "--claim-idle-ms", min=1, help="Take over another consumer's messages unacked this long."
        ),
    ] = 30_000,
    block_ms: Annotated[int, typer.Option("--block-ms", min=1, help="Longest wait for new messages.")] = 1000,
    max_idle: Annotated[
        float | None, typer.Option("--max-idle", help="Exit after this many seconds without messages.")
    ] = None,
    max_deliveries: Annotated[
        int,
        typer.Option(
            "--max-deliveries", min=1, help="Dead-letter a message handed out more often than this."
        ),
    ] = 5,
    model_digest: Annotated[
        str | None, typer.Option("--model-digest", help="Refuse the model unless its digest is this.")
    ] = None,
    dedup_window: Annotated[
        float,
        typer.Option(
            "--dedup-window",
            help="Redis: seconds an answered input id is remembered, so a redelivery is not answered twice.",
        ),
    ] = 3600.0,
    maxlen: Annotated[
        int,
        typer.Option(
            "--maxlen",
            min=0,
            help="Redis: cap the output and dead-letter streams at about this many entries (0: no cap).",
        ),
    ] = 1_000_000,
    socket_timeout: Annotated[
        float,
        typer.Option(
            "--socket-timeout", min=0.1, help="Redis: seconds a reply may take (on top of --block-ms)."
        ),
    ] = 10.0,
) -> None:
    """Consume INPUT as GROUP, predict, publish to OUTPUT keyed by input id, ack after the write (at-least-once).

    A record that cannot be read (not JSON, nested too deeply, too large, not one row) goes to the
    dead-letter stream with its reason; the rest of its batch is unaffected. Credentials in --broker are
    never printed.
    """
    from model.bundle import BundleError
    from model.registry import RegistryError
    from serving.core.predictor import Predictor
    from serving.stream.broker import Broker, redact
    from serving.stream.worker import StreamWorker

    try:
        predictor = Predictor.load(model, model_digest)
    except (BundleError, RegistryError, FileNotFoundError) as e:
        report(e)
    redelivery_ms = claim_idle_ms * (max_deliveries + 1)
    if not broker.startswith("kafka://") and dedup_window * 1000 < redelivery_ms:
        report(
            f"--dedup-window {dedup_window:g} s is shorter than a redelivery can take (--claim-idle-ms "
            f"{claim_idle_ms} x (--max-deliveries {max_deliveries} + 1) = {redelivery_ms / 1000:g} s): "
            "a redelivered message could be answered twice"
        )
    adapter: Broker
    if broker.startswith("kafka://"):
        from serving.stream.kafka import KafkaBroker, KafkaConfigError

        try:
            adapter = KafkaBroker.connect(broker, input, output, group, consumer, dead_letter)
        except KafkaConfigError as e:
            report(e)
    else:
        from serving.stream.redis_streams import BrokerError, RedisStreamsBroker

        try:
            adapter = RedisStreamsBroker.from_url(
                broker,
                socket_timeout=socket_timeout + block_ms / 1000,
                input=input,
                output=output,
                group=group,
                consumer=consumer,
                dead_letter=dead_letter,
                claim_idle_ms=claim_idle_ms,
                dedup_window_ms=int(dedup_window * 1000),
                maxlen=maxlen,
            )
        except BrokerError as e:
            report(e)
    worker = StreamWorker(predictor, adapter, batch=batch, max_deliveries=max_deliveries)
    err_console.print(
        f"consuming {input} as {group}/{worker.consumer} with model {predictor.short_digest} -> {output}",
        highlight=False,
        markup=False,
    )
    try:
        # a second Ctrl-C stops at once: a batch not acknowledged yet is delivered again, to this group
        stopping = saying("the batch under way", err_console.print)
        with contextlib.suppress(KeyboardInterrupt), stop_on_signals(stopping) as stopped:
            worker.run(stop=stopped.is_set, block_ms=block_ms, max_idle_s=max_idle)
    except Exception as e:  # the broker failed (timeouts, refused writes): say so, without its password
        report(redact(f"{type(e).__name__}: {e} (broker {broker})", broker))
    finally:
        with contextlib.suppress(Exception):  # a broker that is gone cannot be closed politely
            adapter.close()
    console.print(worker.stats.explain(), highlight=False, markup=False)


def register(app_: typer.Typer) -> None:
    """Add this module's commands to the `sluice` app."""
    app_.add_typer(app, name="stream")
