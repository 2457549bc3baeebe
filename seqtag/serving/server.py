"""``seqtag serve``: a trained tagger behind an HTTP JSON API, built with LitServe.

    seqtag serve --model runs/seqtag/<run>/checkpoints/best.ckpt --port 8000
    seqtag serve --model you/my-ner        # a model folder, or a Hugging Face Hub model (see docs/sharing.md)
    curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"text": "Angela Merkel visited Paris."}'
    curl -s localhost:8000/health

``POST /predict`` takes what :mod:`seqtag.serving.requests` describes and answers, per object of the body,
``{"sentences": [record, ...]}`` (a list of them for a list body), the records of :mod:`seqtag.records` that
``Tagger.predict`` and JSONL predictions give; a record's ``input`` is the index of its object in the body.
``GET /health`` answers 200 once the model is loaded (503 before).

Processes (LitServe's): this command's process loads the model once (a Hub model is downloaded there, once), to
fail at once on a bad one and to read what requests are checked against (tokenization mode, feature columns), then
starts the model's worker process(es) and one HTTP process. The HTTP process parses and checks each request
(``PredictBody``), so a bad one gets its own 4xx answer and never reaches the model. The worker loads the tagger in
``TaggerAPI.setup`` and tags the requests that arrive together (up to ``max_batch_size``, waiting at most
``batch_timeout`` seconds for them) with one ``Tagger.predict`` call over all their sentences.
Stop it with Ctrl-C or SIGTERM.
"""

# No `from __future__ import annotations`: LitServe reads decode_request's annotation (PredictBody) as the body type
# FastAPI checks, and a string there would not resolve.
import argparse
import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqtag.errors import SeqtagInputError

try:
    import litserve as ls
except ImportError as err:  # an optional dependency: say how to get it rather than show a traceback
    raise SeqtagInputError(f"seqtag serve needs LitServe ({err}): pip install 'seqtag[serve]'") from err
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import RootModel, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from seqtag.serving.requests import Limits, Request, RequestError, parse_request

if TYPE_CHECKING:
    from seqtag.tagger import Tagger

log = logging.getLogger(__name__)

# The limits requests are checked against. Set by `serve` before the HTTP process is forked from this one, which
# thereby inherits them; the model's worker never reads them.
LIMITS = Limits()


class PredictBody(RootModel[Any]):
    """The body of ``POST /predict``, checked by FastAPI in the HTTP process: its root becomes a ``Request``."""

    @field_validator("root")
    @classmethod
    def _check(cls, body: Any) -> Request:
        return parse_request(body, LIMITS)


def load_tagger(model: str, map_location: str = "cpu") -> "Tagger":
    """A ``Tagger`` from a checkpoint file (``Tagger.load``) or a model folder (``Tagger.from_pretrained``)."""
    from seqtag.tagger import Tagger

    if Path(model).is_file():
        return Tagger.load(model, map_location=map_location)
    return Tagger.from_pretrained(model, map_location=map_location)


class TaggerAPI(ls.LitAPI):
    """Tags the requests of a batch with one ``Tagger.predict`` call.

    Args:
        model: the tagger's checkpoint (``best.ckpt``) or model folder (see :func:`load_tagger`).
        threads: torch threads of the worker (None: torch's default). Default: None
        batch_size: sentences per forward pass inside ``Tagger.predict``. Default: 256
        max_batch_size: the most requests tagged together. Default: 16
        batch_timeout: how long the worker waits for a batch to fill, in seconds. Default: 0.005
        log_level: of the worker's messages; ``debug`` logs each batch (requests, sentences, time). Default: info
    """

    def __init__(
        self,
        model: str,
        threads: int | None = None,
        batch_size: int = 256,
        max_batch_size: int = 16,
        batch_timeout: float = 0.005,
        log_level: str = "info",
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.model, self.threads, self.batch_size, self.log_level = model, threads, batch_size, log_level

    def setup(self, device: str) -> None:
        import torch

        if not log.handlers:  # a spawned process: logging is not set up there
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s - seqtag serve worker - %(message)s"))
            log.addHandler(handler)
        log.setLevel(self.log_level.upper())
        if self.threads:
            torch.set_num_threads(self.threads)
        self.tagger = load_tagger(self.model, map_location=device)

    def decode_request(self, request: PredictBody) -> Request:
        return request.root  # checked and normalized by PredictBody in the HTTP process

    def predict(self, x: Request | list[Request]) -> Any:
        """Records of each object of each request: one list of sentence records per object, in order.

        All the objects of all the requests go through one ``Tagger.predict`` call with the largest ``n_best`` and
        marginals when any asks for them; each object's records then keep its own first ``n_best`` sequences (the
        k best are the first k of the K best) and marginals only when asked. With a model that reads documents,
        each object is a document of its own.
        """
        start = time.perf_counter()
        requests = x if isinstance(x, list) else [x]  # a list only when LitServe batches (max_batch_size > 1)
        items = [item for request in requests for item in request.items]
        features = [item.features for item in items] if self.tagger.vocab.features else None
        records = self.tagger.predict(
            [item.input for item in items],
            n_best=max(item.n_best for item in items),
            marginals=any(item.marginals for item in items),
            batch_size=self.batch_size,
            features=features,
            documents=list(range(len(items))) if self.tagger.reads_documents else None,
        )
        per_item: list[list[dict[str, Any]]] = [[] for _ in items]
        for record in records:
            per_item[record["input"]].append(record)
        outputs, first = [], 0
        for request in requests:
            mine = per_item[first : first + len(request.items)]
            for position, (item, item_records) in enumerate(zip(request.items, mine)):
                for record in item_records:
                    record["input"] = position
                    if item.n_best:
                        record["n_best"] = record["n_best"][: item.n_best]
                    else:
                        record.pop("n_best", None)
                    if not item.marginals:
                        record.pop("marginals", None)
            outputs.append((request.is_list, mine))
            first += len(request.items)
        log.debug(
            "tagged %d requests together: %d objects, %d sentences in %.1f ms",
            *(len(requests), len(items), len(records), 1000 * (time.perf_counter() - start)),
        )
        return outputs if isinstance(x, list) else outputs[0]

    def encode_response(self, output: tuple[bool, list[list[dict[str, Any]]]]) -> Any:
        is_list, per_item = output
        answers = [{"sentences": item_records} for item_records in per_item]
        return answers if is_list else answers[0]


class BodySizeLimit:
    """Answers 413 to a body over ``max_bytes``: at once from its Content-Length, else as it streams in.

    Before answering it reads and drops the rest of the body, up to ``drain_bytes`` or ``drain_seconds``: a client
    (curl, urllib, requests) sends its whole body before it reads the answer, and a server that closes a connection
    with unread data resets it, so the client would see a broken connection instead of the 413 ("lingering close",
    as nginx does). A body beyond those bounds still gets the answer, with the connection closed after it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, drain_bytes: int = 8 << 20, drain_seconds: float = 5.0) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.drain_bytes, self.drain_seconds = drain_bytes, drain_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"the body is larger than {self.max_bytes} bytes (max_request_bytes)"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._drain(receive, more_body=True)
            return await JSONResponse({"detail": message}, 413)(scope, receive, send)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.max_bytes:
                await self._drain(receive, more_body=event.get("more_body", False))
                raise HTTPException(413, message)  # FastAPI passes it on as it is while reading the body
            return event

        await self.app(scope, counting_receive, send)

    async def _drain(self, receive: Receive, more_body: bool) -> None:
        """Reads and drops body events until the body ends or the drain bounds are reached."""

        async def drop() -> None:
            dropped, more = 0, more_body
            while more and dropped <= self.drain_bytes:
                event = await receive()
                if event["type"] != "http.request":  # the client went away
                    return
                dropped += len(event.get("body", b""))
                more = event.get("more_body", False)

        try:
            await asyncio.wait_for(drop(), self.drain_seconds)
        except asyncio.TimeoutError:
            pass


async def _invalid_request(request: Any, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's answer to a body it could not parse or that ``PredictBody`` refused, as ``{"detail": message}``."""
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, RequestError):
            return JSONResponse({"detail": str(cause)}, cause.status)
        if error.get("type") == "json_invalid":
            return JSONResponse(
                {"detail": f"the body is not valid JSON: {cause} (at character {error['loc'][-1]})"}, 400
            )
        if error.get("type") == "missing":
            return JSONResponse({"detail": 'the body is empty: send a JSON object such as {"text": "..."}'}, 400)
    return JSONResponse({"detail": "; ".join(str(error.get("msg")) for error in exc.errors())}, 422)


def build_server(
    api: TaggerAPI,
    limits: Limits,
    accelerator: str = "auto",
    workers: int = 1,
    timeout: float = 30.0,
    fast_queue: bool = False,
    metadata: dict[str, Any] | None = None,
) -> ls.LitServer:
    """The LitServer of ``api`` that checks requests against ``limits`` (set here, before the HTTP process forks)."""
    global LIMITS
    LIMITS = limits
    server = ls.LitServer(
        api,
        accelerator=accelerator,
        workers_per_device=workers,
        timeout=timeout,
        fast_queue=fast_queue,
        model_metadata=metadata,
        middlewares=[(BodySizeLimit, {"max_bytes": limits.max_request_bytes})],
    )
    server.app.add_exception_handler(RequestValidationError, _invalid_request)
    return server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqtag serve", description="Serve a trained tagger over HTTP (JSON).")
    parser.add_argument("--model", required=True, help="a checkpoint (best.ckpt), a model folder or a Hub model name")
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (this machine only), 0.0.0.0 or ::")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=16, help="the most requests tagged together")
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds to wait for a batch to fill")
    parser.add_argument("--workers", type=int, default=1, help="model worker processes per device")
    parser.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a request may wait for the model")
    parser.add_argument("--max-request-bytes", type=int, default=Limits.max_request_bytes)
    parser.add_argument("--max-tokens", type=int, default=Limits.max_tokens, help="the most tokens in one request")
    parser.add_argument("--max-n-best", type=int, default=Limits.max_n_best)
    parser.add_argument("--fast-queue", action="store_true", help="LitServe's ZeroMQ queue between processes")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def serve_main(argv: list[str]) -> int:
    """Runs ``seqtag serve`` until Ctrl-C or SIGTERM; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.host not in ("127.0.0.1", "0.0.0.0", "::"):
        raise SeqtagInputError(f"--host should be 127.0.0.1, 0.0.0.0 or :: (what LitServe binds), got {args.host!r}")
    if not 1024 <= args.port <= 65535:
        raise SeqtagInputError(f"--port should be from 1024 to 65535, got {args.port}")
    for name in ("max_batch_size", "workers", "max_request_bytes", "max_tokens"):
        if getattr(args, name) < 1:
            raise SeqtagInputError(f"--{name.replace('_', '-')} should be at least 1, got {getattr(args, name)}")
    if args.max_n_best < 0 or args.batch_timeout < 0 or not 0 < args.timeout:
        raise SeqtagInputError("--max-n-best and --batch-timeout should be >= 0 and --timeout > 0")
    model = args.model
    if not Path(model).is_file():  # a model folder, or a Hub model downloaded here once for the workers to read
        from seqtag.hub import resolve_folder

        model = str(resolve_folder(model))
    tagger = load_tagger(model)  # here too, so that a bad model is one error paragraph, not a worker crash
    limits = Limits(
        max_request_bytes=args.max_request_bytes,
        max_tokens=args.max_tokens,
        max_n_best=args.max_n_best,
        tokenize_mode=tagger.tokenize_mode,
        num_features=len(tagger.vocab.features),
    )
    metadata = {"model": args.model, "path": str(Path(model).resolve()), "labels": list(tagger.labels), **vars(limits)}
    del tagger
    api = TaggerAPI(
        model,
        args.threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        log_level=args.log_level,
    )
    server = build_server(api, limits, args.accelerator, args.workers, args.timeout, args.fast_queue, metadata)

    main_process = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != main_process:  # the HTTP process, forked from this one, inherits the handler
            raise SystemExit(0)
        raise KeyboardInterrupt  # LitServer.run shuts its processes down on it

    signal.signal(signal.SIGTERM, stop)
    print(f"seqtag serve: {args.model} on http://{args.host}:{args.port}/predict", flush=True)
    server.run(
        host=args.host,
        port=args.port,
        generate_client_file=False,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    return 0
