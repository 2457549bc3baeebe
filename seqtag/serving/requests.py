"""What ``POST /predict`` of ``seqtag serve`` accepts, checked before a request reaches the model.

A body is one object or a non-empty list of objects::

    {"text": "Angela Merkel visited Paris. She left on Monday."}     raw text: split into sentences and tokens
    {"tokens": ["Angela", "Merkel", "visited", "Paris", "."]}       one pre-tokenized sentence
    [{"text": "..."}, {"tokens": [...], "n_best": 3}]               several at once

with the optional fields ``n_best`` (an integer from 0 to ``Limits.max_n_best``: the k most probable tag sequences
of each sentence), ``marginals`` (true: each token's tag probabilities) and, for a model trained with feature
columns, ``features`` (with ``tokens`` only: one list of values per column, one value per token). Anything else is
an error whose status says what went wrong: 400 the body is not JSON, 413 the body or its token count is over a
limit, 422 a field is missing, unknown, of the wrong type or out of range. Messages name the field and, in a list,
the object (``body[2].n_best should be an integer from 0 to 10, got 50``).

Pure Python (the tokenizer aside, nothing is imported): the server runs these checks in its HTTP process, where
each request gets its own answer, rather than in the model's process, where LitServe fails every request of a
batch when one of them raises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from seqtag.tokenize import tokenize

FIELDS = ("text", "tokens", "n_best", "marginals", "features")


class RequestError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status of the answer (400, 413 or 422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and what the model reads.

    Args:
        max_request_bytes: the largest body, in bytes (a larger one gets 413). Default: 1 MiB
        max_tokens: the most tokens in one request, all its sentences together (more gets 413). Default: 10,000
        max_n_best: the largest ``n_best``. Default: 10
        tokenize_mode: how raw text is split (``words`` or ``chars``, the model's ``Tagger.tokenize_mode``), to count
            its tokens. Default: ``words``
        num_features: the feature columns the model reads besides the tokens. Default: 0
    """

    max_request_bytes: int = 1 << 20
    max_tokens: int = 10_000
    max_n_best: int = 10
    tokenize_mode: str = "words"
    num_features: int = 0


@dataclass
class Item:
    """One object of a request: a text or a token list, and what to compute for it."""

    input: str | list[str]
    n_best: int = 0
    marginals: bool = False
    features: list[list[str]] | None = None


@dataclass
class Request:
    """A checked request: its objects, and whether the body was a list (the answer is then a list too)."""

    items: list[Item]
    is_list: bool


def parse_request(body: Any, limits: Limits) -> Request:
    """Checks a request body (parsed JSON, or its bytes) and returns it as :class:`Request`.

    Raises:
        RequestError: with the status and a message naming the field.
    """
    if isinstance(body, (bytes, bytearray, str)):  # a body sent without a JSON content type (curl -d)
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise RequestError(f"the body is not valid JSON: {err}", 400) from None
    if isinstance(body, dict):
        objects, is_list = [body], False
    elif isinstance(body, list):
        if not body:
            raise RequestError('the body is an empty list: give at least one object such as {"text": "..."}')
        objects, is_list = body, True
    else:
        raise RequestError(
            f'the body should be an object such as {{"text": "..."}} or a list of them, got {_show(body)}'
        )
    items, total = [], 0
    for i, obj in enumerate(objects):
        item, num_tokens = _parse_item(obj, f"body[{i}]" if is_list else "body", limits)
        total += num_tokens
        if total > limits.max_tokens:
            raise RequestError(f"the request has more than {limits.max_tokens} tokens (max_tokens): split it", 413)
        items.append(item)
    return Request(items, is_list)


def _parse_item(obj: Any, name: str, limits: Limits) -> tuple[Item, int]:
    """One object of the body and its number of tokens."""
    if not isinstance(obj, dict):
        raise RequestError(f'{name} should be an object such as {{"text": "..."}}, got {_show(obj)}')
    unknown = [key for key in obj if key not in FIELDS]
    if unknown:
        raise RequestError(f"{name}: unknown field {unknown[0]!r} (the fields are {', '.join(FIELDS)})")
    if ("text" in obj) == ("tokens" in obj):
        which = "both" if "text" in obj else "neither"
        raise RequestError(f"{name} should have either 'text' (raw text) or 'tokens' (one sentence), got {which}")
    n_best = obj.get("n_best", 0)
    if isinstance(n_best, bool) or not isinstance(n_best, int) or not 0 <= n_best <= limits.max_n_best:
        raise RequestError(f"{name}.n_best should be an integer from 0 to {limits.max_n_best}, got {_show(n_best)}")
    marginals = obj.get("marginals", False)
    if not isinstance(marginals, bool):
        raise RequestError(f"{name}.marginals should be true or false, got {_show(marginals)}")
    if "text" in obj:
        text = obj["text"]
        if not isinstance(text, str):
            raise RequestError(f"{name}.text should be a string, got {_show(text)}")
        if limits.num_features:
            raise RequestError(
                f"{name}: this model reads {limits.num_features} feature columns besides the tokens, which raw text "
                f"does not have: send 'tokens' with 'features'"
            )
        if not text.strip():
            raise RequestError(f"{name}.text is empty")
        # Every whitespace-separated piece holds at least one token: a cheap bound before tokenizing a long text.
        if len(text.split()) > limits.max_tokens:
            raise RequestError(f"the request has more than {limits.max_tokens} tokens (max_tokens): split it", 413)
        num_tokens = sum(len(sentence) for sentence in tokenize(text, limits.tokenize_mode))  # type: ignore[arg-type]
        if not num_tokens:
            raise RequestError(f"{name}.text has no tokens to tag")
        if "features" in obj:
            raise RequestError(f"{name}.features go with 'tokens' only")
        return Item(text, n_best, marginals), num_tokens
    tokens = obj["tokens"]
    if not isinstance(tokens, list) or not tokens:
        raise RequestError(f"{name}.tokens should be a non-empty list of strings (one sentence), got {_show(tokens)}")
    if len(tokens) > limits.max_tokens:
        raise RequestError(f"the request has more than {limits.max_tokens} tokens (max_tokens): split it", 413)
    for j, token in enumerate(tokens):
        if not isinstance(token, str) or not token:
            raise RequestError(f"{name}.tokens[{j}] should be a non-empty string, got {_show(token)}")
    features = _parse_features(obj.get("features"), name, len(tokens), limits.num_features)
    return Item(tokens, n_best, marginals, features), len(tokens)


def _parse_features(features: Any, name: str, length: int, num_features: int) -> list[list[str]] | None:
    """The feature columns of a token list: ``num_features`` lists of ``length`` strings (None for a model without)."""
    if not num_features:
        if features is not None:
            raise RequestError(f"{name}.features: this model reads no feature columns")
        return None
    rule = f"{num_features} lists of {length} strings (one list per feature column, one value per token)"
    if features is None:
        raise RequestError(
            f"{name}: this model reads {num_features} feature columns besides the tokens: give features, {rule}"
        )
    if not isinstance(features, list) or len(features) != num_features:
        raise RequestError(f"{name}.features should be {rule}, got {_show(features)}")
    for column in features:
        if not isinstance(column, list) or len(column) != length or not all(isinstance(v, str) for v in column):
            raise RequestError(f"{name}.features should be {rule}, got {_show(features)}")
    return features


def _show(value: Any) -> str:
    """A value as the client wrote it, cut short (the message about a 1 MB text stays short), with its JSON type
    when that is not plain from the text: ``50``, ``true``, ``null``, ``string "5"``, ``list [1, 2]``."""
    text = json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = {str: "string", list: "list", dict: "object"}.get(type(value))
    return f"{kind} {text}" if kind else text
