"""``seqtag export``: a trained tagger as one ONNX graph (ids in, tag ids out, the CRF's Viterbi inside), and the
vocabulary beside it, so that :mod:`seqtag.onnx_runner` tags text with onnxruntime alone.

    seqtag export --ckpt_path best.ckpt --output tagger.onnx     # writes tagger.onnx and tagger.vocab.json

The graph (:class:`TaggerGraph`) computes what ``Tagger.forward`` and ``Tagger.decode`` compute, with the same
weights, in operations that ``torch.onnx.export(..., dynamo=True)`` turns into an ONNX graph with dynamic batch size,
sentence length and characters per token:

- words: the trained embedding and the pretrained table of words unseen in training are one (V + P, E) matrix, so
  ids from ``len(vocab.words)`` on index the table as in :class:`~seqtag.modules.embeddings.TokenEmbedder`;
- each BiLSTM layer (and the character BiLSTM; GRU and tanh RNN cells too) is one ONNX ``LSTM`` (``GRU``,
  ``RNN``) node whose ``sequence_lens`` input makes the backward direction start at each sentence's last token,
  exactly as packed sequences do (:func:`birnn`, an operator of its own with its ONNX translation);
- Viterbi under the scheme's constraints and its backtracking are two ``scan`` loops over time (ONNX ``Scan``);
- the CRF's forward-backward scores (float64, log space) are further outputs, computed when the boolean input
  ``forward_backward`` is true (an ONNX ``If``): the runner computes span confidences and marginals from them as
  ``Tagger.predict`` does.

Options whose computation is not a function of one sentence's ids (``document_context``, ``document_memory``) or
that the graph does not cover (character language models) raise :class:`~seqtag.errors.SeqtagInputError`.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqtag.data.predict_input import READING_OPTIONS
from seqtag.errors import SeqtagInputError
from seqtag.onnx_runner import FORMAT, FORMAT_VERSION, vocab_path

OPSET = 18
INPUTS = ("word_ids", "char_ids", "casing_ids", "lengths")
CRF_OUTPUTS = ("tag_ids", "emissions", "log_alpha", "log_beta", "log_z")
SOFTMAX_OUTPUTS = ("tag_ids", "emissions")


def check_exportable(hparams: dict[str, Any]) -> None:
    """Raises :class:`SeqtagInputError` naming the first model option the ONNX graph does not cover."""
    if hparams.get("document_context"):
        raise SeqtagInputError(
            "model.document_context cannot be exported to ONNX: the BiLSTM reads a whole document, a batch of "
            "sentences of the same document at once, which is not a function of each sentence's ids"
        )
    if hparams.get("document_memory"):
        raise SeqtagInputError(
            "model.document_memory cannot be exported to ONNX: each token reads the states of its word's other "
            "occurrences in the document, across the sentences of a batch"
        )
    for direction in ("forward", "backward"):
        if hparams.get(f"char_lm_{direction}") is not None:
            raise SeqtagInputError(
                f"model.char_lm_{direction} cannot be exported to ONNX: the character language model's sentence "
                f"stream is not part of the graph"
            )


RNN_FUNCTIONS = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}
# Gate rows of torch's weights in the order of ONNX's: LSTM i, f, g, o → i, o, f, c; GRU r, z, n → z, r, h.
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}


@torch.library.custom_op("seqtag::birnn", mutates_args=())
def birnn(
    inputs: Tensor, lengths: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor, cell: str
) -> tuple[Tensor, Tensor]:
    """One bidirectional RNN layer over right-padded sequences, as packed sequences and ``nn.LSTM``/``GRU``/``RNN``
    compute it; exported as one ONNX ``LSTM``/``GRU``/``RNN`` node whose ``sequence_lens`` input makes the backward
    direction start at each sequence's last real step (:func:`_birnn_onnx`). An operator of its own because
    ``torch.export`` unrolls ``nn.LSTM`` over the traced length, which would fix the sentence length.

    Shape:
        inputs: (B, T, E);  lengths: (B,) long, at least 1;  weight_ih: (2, G*H, E);  weight_hh: (2, G*H, H);
        bias_ih, bias_hh: (2, G*H), G = 4 (LSTM), 3 (GRU) or 1 (RNN), forward direction first, torch's gate order;
        returns: (B, T, 2H) states, zeros at padding, and (2, B, H) the last state of each direction
    """
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

    batch, length, _ = inputs.shape
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    h0 = inputs.new_zeros(2, batch, weight_hh.shape[2])
    weights = [w for d in range(2) for w in (weight_ih[d], weight_hh[d], bias_ih[d], bias_hh[d])]
    run = getattr(torch._VF, RNN_FUNCTIONS[cell])
    outputs = run(
        packed.data, packed.batch_sizes, (h0, h0) if cell == "lstm" else h0, weights, True, 1, 0.0, False, True
    )
    states = PackedSequence(outputs[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    last = outputs[1]  # (2, B, H) in the packing's order
    padded = pad_packed_sequence(states, batch_first=True, total_length=length)[0]  # (B, T, 2H)
    return padded, last.index_select(1, packed.unsorted_indices)


@birnn.register_fake
def _birnn_shapes(
    inputs: Tensor, lengths: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor, cell: str
) -> tuple[Tensor, Tensor]:
    batch, length, _ = inputs.shape
    hidden = weight_hh.shape[2]
    return inputs.new_empty(batch, length, 2 * hidden), inputs.new_empty(2, batch, hidden)


def _birnn_onnx(inputs, lengths, weight_ih, weight_hh, bias_ih, bias_hh, cell: str):  # noqa: ANN001, ANN202
    """:func:`birnn` in ONNX: the gate rows reordered (on the weights, folded into constants), then one node."""
    import numpy as np
    import onnx_ir as ir
    from onnxscript import opset18 as op

    hidden = weight_hh.shape[2]
    rows = np.concatenate([np.arange(g * hidden, (g + 1) * hidden) for g in ONNX_GATE_ORDER[cell]])
    index = op.Constant(value=ir.tensor(rows.astype(np.int64)))
    w, r = op.Gather(weight_ih, index, axis=1), op.Gather(weight_hh, index, axis=1)
    bias = op.Concat(op.Gather(bias_ih, index, axis=1), op.Gather(bias_hh, index, axis=1), axis=1)  # (2, 2*G*H)
    x = op.Transpose(inputs, perm=[1, 0, 2])  # (T, B, E)
    lens = op.Cast(lengths, to=ir.DataType.INT32)
    options = {"hidden_size": hidden, "direction": "bidirectional"}
    if cell == "lstm":
        y, last, _ = op.LSTM(x, w, r, bias, lens, **options)
    elif cell == "gru":
        y, last = op.GRU(x, w, r, bias, lens, linear_before_reset=1, **options)  # torch's GRU: r applies after W_hn h
    else:
        y, last = op.RNN(x, w, r, bias, lens, activations=["Tanh", "Tanh"], **options)
    y = op.Transpose(y, perm=[2, 0, 1, 3])  # (B, T, 2, H)
    return op.Reshape(y, op.Constant(value_ints=[0, 0, -1])), last  # (B, T, 2H), (2, B, H)


class _BiRNN(nn.Module):
    """One bidirectional layer of an ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (tanh), or of a ``ReferenceLSTM`` (which has
    ``nn.LSTM``'s parameter names and layout), run by :func:`birnn`.

    Shape:
        inputs: (B, T, E);  lengths: (B,) at least 1;  returns: (B, T, 2H), (2, B, H) as :func:`birnn`
    """

    def __init__(self, rnn: nn.Module, cell: str, layer: int) -> None:
        super().__init__()
        if cell not in RNN_FUNCTIONS:
            raise SeqtagInputError(f"cell should be one of {sorted(RNN_FUNCTIONS)}, got {cell!r}")
        self.cell = cell
        names = [f"l{layer}", f"l{layer}_reverse"]
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            tensors = [getattr(rnn, f"{kind}_{name}", None) for name in names]
            if tensors[0] is None:  # an RNN without biases
                rows = getattr(rnn, f"weight_ih_{names[0]}").shape[0]
                tensors = [torch.zeros(rows), torch.zeros(rows)]
            self.register_buffer(kind, torch.stack([t.detach().float() for t in tensors]))

    def forward(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return birnn(inputs, lengths, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.cell)


class TaggerGraph(nn.Module):
    """A trained :class:`~seqtag.tagger.Tagger`'s tagging as one exportable function of id tensors.

    Args:
        tagger: the trained tagger (its weights are copied; it is left unchanged).

    Shape:
        word_ids: (B, T) long, ids from ``vocab_size`` on index the pretrained table;  char_ids: (B, T, C) long,
        padded with 0;  casing_ids: (B, T) long;  lengths: (B,) long, at least 1;  feature_ids: (B, T, F) long, for a
        model with F feature columns.
        returns: ``tag_ids`` (B, T) long, 0 at padding; ``emissions`` (B, T, K) float, 0 at padding; with the CRF
        head also ``log_alpha``, ``log_beta`` (B, T, K) float64 (see ``ConditionalRandomField.forward_backward``;
        -inf at padding) and ``log_z`` (B,) float64.
    """

    def __init__(self, tagger: Any) -> None:
        super().__init__()
        check_exportable(dict(tagger.hparams))
        embedder = tagger.embedder
        words = embedder.words.weight.detach().float()
        if embedder.pretrained_table is not None:
            words = torch.cat([words, embedder.pretrained_table.detach().float()])  # (V + P, E)
        self.register_buffer("word_vectors", words)
        self.char_encoder = tagger.hparams.char_encoder if embedder.chars is not None else "none"
        if self.char_encoder != "none":
            self.char_embedding = copy.deepcopy(embedder.chars.embedding)
        if self.char_encoder == "cnn":
            self.char_conv = copy.deepcopy(embedder.chars.conv)
        elif self.char_encoder == "lstm":
            self.char_rnn = _BiRNN(embedder.chars.lstm, "lstm", 0)
        self.casing = copy.deepcopy(embedder.casing)
        self.features = copy.deepcopy(embedder.features)
        rnn, cell = tagger.encoder.rnn, tagger.hparams.cell
        self.layers = nn.ModuleList(_BiRNN(rnn, cell, layer) for layer in range(tagger.hparams.num_layers))
        self.projection = copy.deepcopy(tagger.projection)
        self.crf = tagger.crf is not None
        if self.crf:
            transitions, start, end = (s.detach() for s in tagger.crf._scores(torch.float32))
            self.register_buffer("transitions", transitions)  # (K, K), forbidden at FORBIDDEN_SCORE
            self.register_buffer("start", start)  # (K,)
            self.register_buffer("end", end)  # (K,)
        self.requires_grad_(False)  # a function of the ids: nothing here trains
        self.eval()

    @property
    def output_names(self) -> tuple[str, ...]:
        return CRF_OUTPUTS if self.crf else SOFTMAX_OUTPUTS

    def forward(
        self,
        word_ids: Tensor,
        char_ids: Tensor,
        casing_ids: Tensor,
        lengths: Tensor,
        feature_ids: Tensor | None = None,
        forward_backward: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        batch, length = word_ids.shape
        mask = torch.arange(length, device=word_ids.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        parts = [nn.functional.embedding(word_ids, self.word_vectors)]  # (B, T, E_w)
        if self.char_encoder != "none":
            # Each distinct token once: a batch's tokens are about 2.5 times its distinct ones (CoNLL-2003).
            distinct, inverse = torch.unique(char_ids.flatten(0, 1), dim=0, return_inverse=True)  # (U, C), (B*T,)
            chars = self._chars(distinct)[inverse].unflatten(0, (batch, length))  # (B, T, F)
            parts.append(torch.where(mask.unsqueeze(2), chars, 0.0))
        if self.casing is not None:
            parts.append(self.casing(casing_ids))  # (B, T, casing_dim)
        for f, embedding in enumerate(self.features):
            parts.append(embedding(feature_ids[..., f]))  # (B, T, feature_dim)
        states = torch.cat(parts, dim=-1)  # (B, T, E)
        for layer in self.layers:
            states = layer(states, lengths)[0]  # (B, T, 2H)
        emissions = torch.where(mask.unsqueeze(2), self.projection(states), 0.0)  # (B, T, K)
        if not self.crf:
            return emissions.argmax(dim=-1).masked_fill(~mask, 0), emissions
        tag_ids = self._viterbi(emissions, mask)
        if forward_backward is None:
            return tag_ids, emissions, *self._forward_backward(emissions, mask)
        # Forward-backward costs about as much as the rest of the graph: only when asked for.
        fb = torch.cond(forward_backward, self._forward_backward, _no_scores, (emissions, mask))
        log_alpha, log_beta, log_z = fb
        return tag_ids, emissions, log_alpha, log_beta, log_z

    def _chars(self, char_ids: Tensor) -> Tensor:
        """(N, C) character ids of N tokens → (N, F), as :class:`CharCNN` or :class:`CharLSTM` computes them for a
        token with at least one character (padding tokens get values that the caller replaces)."""
        present = char_ids != 0  # (N, C)
        embedded = self.char_embedding(char_ids)  # (N, C, D), zero rows at padding
        if self.char_encoder == "cnn":
            h = self.char_conv(embedded.transpose(1, 2))  # (N, F, C), zero padding around each token as Conv1d pads
            return h.masked_fill(~present.unsqueeze(1), float("-inf")).amax(dim=2)  # (N, F) max over real characters
        lengths = present.sum(dim=1).clamp(min=1)  # (N,)
        last = self.char_rnn(embedded, lengths)[1]  # (2, N, H)
        # The forward state after the last character, the backward state after reading back to the first.
        return torch.cat([last[0], last[1]], dim=1)  # (N, 2H)

    def _viterbi(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """``ConditionalRandomField.decode``: the same operations, its loops over time as scans. (B, T, K) → (B, T)

        Both scans run over all T tokens (a scan needs at least one step, and a sentence may be one token long): the
        first step starts the scores, and the backtracking's step at token 0 only emits the tag.
        """
        from torch._higher_order_ops.scan import scan

        batch, _, num_tags = emissions.shape
        transitions, start = self.transitions, self.start
        keep = torch.arange(num_tags, device=emissions.device).expand(batch, num_tags)  # (B, K) identity pointers

        def step(score: Tensor, inputs: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            emission, real, first = inputs  # (B, K), (B, 1), (B, 1)
            best, prev = (score.unsqueeze(2) + transitions).max(dim=1)  # (B, K) best previous tag for each tag
            # A masked step keeps every tag: the tag at i is the tag at i - 1.
            score = torch.where(first, start + emission, torch.where(real, best + emission, score))
            return score, torch.where(real & ~first, prev, keep)

        steps = (emissions.transpose(0, 1), *_step_flags(mask))  # (T, B, K), (T, B, 1), (T, B, 1)
        score, backpointers = scan(step, emissions.new_zeros((batch, num_tags)), steps)  # (B, K), (T, B, K)
        last = (score + self.end).argmax(dim=1, keepdim=True)  # (B, 1)

        def back(tag: Tensor, pointers: Tensor) -> tuple[Tensor, Tensor]:
            return pointers.gather(1, tag), tag.clone()  # the tag before, and this step's tag

        _, tags = scan(back, last, backpointers, reverse=True)  # (T, B, 1)
        return tags.squeeze(2).transpose(0, 1).masked_fill(~mask, 0)  # (B, T)

    def _forward_backward(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``ConditionalRandomField.forward_backward``, float64: log-space scores, each step a matrix product.

        A step's log-sum over the previous tags, ``log sum_p exp(alpha[p] + transitions[p, y])``, is computed as
        ``log(exp(alpha - max(alpha)) @ exp(transitions - column max)) + max(alpha) + column max``: exact up to
        rounding, and a ``(B, K) @ (K, K)`` product instead of ``B * K * K`` exponentials. Forbidden transitions
        (-1e4) become exact zeros, so tags that no allowed path reaches get -inf, as in
        ``ConditionalRandomField.forward_backward``; so do tags several hundred nats below the best one at a token,
        whose share of any sum is below float64's range (``log_z`` and the probabilities are not affected).

        Shape:
            emissions: (B, T, K);  mask: (B, T);  returns: (B, T, K), (B, T, K), (B,)
        """
        from torch._higher_order_ops.scan import scan

        scores = emissions.double()
        transitions, start, end = self.transitions.double(), self.start.double(), self.end.double()
        into_max = transitions.amax(dim=0)  # (K,) best transition into each tag
        into = (transitions - into_max).exp()  # (K, K) [prev, cur], each column's largest entry 1
        out_max = transitions.amax(dim=1)  # (K,) best transition out of each tag
        out = (transitions - out_max.unsqueeze(1)).exp().T.contiguous()  # (K, K) [nxt, cur], each column's max 1

        def ahead(alpha: Tensor, inputs: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            emission, real, first = inputs
            peak = alpha.amax(dim=1, keepdim=True)  # (B, 1)
            # log sum over prev of exp(alpha[b, prev] + transitions[prev, cur])
            nxt = torch.log(torch.matmul((alpha - peak).exp(), into)) + peak + into_max + emission  # (B, K)
            alpha = torch.where(first, start + emission, torch.where(real, nxt, alpha))
            return alpha, alpha.clone()

        steps = (scores.transpose(0, 1), *_step_flags(mask))  # (T, B, K), (T, B, 1), (T, B, 1)
        alpha, log_alpha = scan(ahead, scores.new_zeros(scores[:, 0].shape), steps)  # (B, K), (T, B, K)
        log_z = torch.logsumexp(alpha + end, dim=1)  # (B,): masked steps carried the last real alpha

        def behind(beta: Tensor, inputs: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            emission, real = inputs  # of the next token
            onward = emission + beta  # (B, K)
            peak = onward.amax(dim=1, keepdim=True)  # (B, 1)
            # log sum over nxt of exp(transitions[cur, nxt] + emission[b, nxt] + beta[b, nxt])
            nxt = torch.log(torch.matmul((onward - peak).exp(), out)) + peak + out_max  # (B, K)
            # Before a masked step (or the end) the token is the last real one: its beta is the end score.
            beta = torch.where(real, nxt, end)
            return beta, beta.clone()

        # Token t reads token t + 1 (gathered, not sliced: a slice of T - 1 tokens makes torch.export guard on T).
        length = scores.shape[1]
        nxt = torch.arange(1, length + 1, device=scores.device)  # (T,)
        following = scores.gather(1, nxt.clamp(max=length - 1).view(1, -1, 1).expand_as(scores)).transpose(0, 1)
        following_real = (nxt.unsqueeze(0) < mask.sum(dim=1, keepdim=True)).transpose(0, 1).unsqueeze(2)  # (T, B, 1)
        _, log_beta = scan(behind, scores.new_zeros(scores[:, 0].shape), (following, following_real), reverse=True)
        padding = ~mask.unsqueeze(2)  # (B, T, 1)
        log_alpha = log_alpha.transpose(0, 1).masked_fill(padding, float("-inf"))  # (B, T, K)
        log_beta = log_beta.transpose(0, 1).masked_fill(padding, float("-inf"))  # (B, T, K)
        return log_alpha, log_beta, log_z


def _no_scores(emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The forward-backward outputs when they are not asked for: -inf everywhere, float64."""
    empty = torch.full_like(emissions, float("-inf"), dtype=torch.float64)  # (B, T, K)
    return empty, empty.clone(), empty[:, 0, 0].clone()


def _step_flags(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per time step: which sentences have a token there, and which step is the first. (B, T) → 2 x (T, B, 1)"""
    real = mask.transpose(0, 1).unsqueeze(2)  # (T, B, 1)
    first = torch.arange(mask.shape[1], device=mask.device).view(-1, 1, 1) == 0  # (T, 1, 1)
    return real, first.expand_as(real)


def example_inputs(num_features: int = 0) -> dict[str, Tensor]:
    """Small id tensors to trace the graph with: three sentences of different lengths, tokens of 1 to 4 characters."""
    lengths = torch.tensor([5, 3, 1])
    word_ids = torch.tensor([[2, 3, 4, 5, 1], [6, 1, 2, 0, 0], [3, 0, 0, 0, 0]])
    mask = word_ids != 0
    chars = torch.tensor([[[2, 3, 0, 0], [2, 0, 0, 0], [2, 3, 4, 5], [3, 2, 0, 0], [1, 0, 0, 0]]] * 3)
    inputs = {
        "word_ids": word_ids,
        "char_ids": chars * mask.unsqueeze(2),
        "casing_ids": mask.long() * 3,
        "lengths": lengths,
    }
    if num_features:
        inputs["feature_ids"] = (mask.long() * 2).unsqueeze(2).expand(-1, -1, num_features).contiguous()
    return inputs


def export_graph(tagger: Any, output: str | Path) -> Path:
    """Writes ``tagger``'s :class:`TaggerGraph` to the ONNX file ``output`` (weights inside it)."""
    graph = TaggerGraph(tagger)
    num_features = len(graph.features)
    inputs = example_inputs(num_features)
    # The few characters of the example stand for any ids: the character and word ids only index tables.
    inputs["char_ids"] = inputs["char_ids"].clamp(max=tagger.hparams.num_chars - 1)
    inputs["word_ids"] = inputs["word_ids"].clamp(max=graph.word_vectors.shape[0] - 1)
    if graph.crf:
        inputs["forward_backward"] = torch.tensor(True)
    batch, tokens, chars = torch.export.Dim("batch"), torch.export.Dim("tokens"), torch.export.Dim("chars")
    dynamic = {
        "word_ids": {0: batch, 1: tokens},
        "char_ids": {0: batch, 1: tokens, 2: chars},
        "casing_ids": {0: batch, 1: tokens},
        "lengths": {0: batch},
    }
    if num_features:
        dynamic["feature_ids"] = {0: batch, 1: tokens}
    if graph.crf:
        dynamic["forward_backward"] = None
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on renamed axes and deprecated pytree classes
        # Captured here rather than by torch.onnx.export, which on a shape that the code fixes would quietly export
        # a graph for that one shape; torch.export raises instead.
        exported = torch.export.export(graph, (), kwargs=inputs, dynamic_shapes=dynamic, strict=False)
        program = torch.onnx.export(
            exported,
            dynamic_shapes=dynamic,  # names the dynamic axes of the ONNX inputs and outputs
            input_names=list(inputs),
            output_names=list(graph.output_names),
            custom_translation_table={torch.ops.seqtag.birnn.default: _birnn_onnx},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    RemoveUnusedNodesPass()(program.model)  # and a constant the optimizer left unused, which onnxruntime warns about
    program.save(str(output), external_data=False)
    return output


def export_metadata(tagger: Any, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the runner needs beside the graph: the vocabulary (with the pretrained table's words), labels, schemes,
    the tokenizer mode, the CRF's constrained scores (for span confidence) and the checkpoint's reading options."""
    vocab = tagger.vocab
    crf = tagger.crf is not None
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "inputs": list(INPUTS) + (["feature_ids"] if vocab.features else []) + (["forward_backward"] if crf else []),
        "outputs": list(CRF_OUTPUTS if tagger.crf is not None else SOFTMAX_OUTPUTS),
        "labels": list(tagger.labels),
        "scheme": tagger.scheme,
        "data_scheme": vocab.data_scheme,
        "head": "crf" if tagger.crf is not None else "softmax",
        "tokenize_mode": tagger.tokenize_mode,
        "vocab": vocab.to_dict(),
        # One string: 400,000 words read back in milliseconds.
        "pretrained_words": "\n".join(vocab.pretrained_words),
    }
    if tagger.crf is not None:
        transitions, start, end = (s.detach().tolist() for s in tagger.crf._scores(torch.float32))
        meta["crf"] = {"transitions": transitions, "start": start, "end": end}
    saved = (checkpoint or {}).get("datamodule_hyper_parameters", {})
    meta["reading"] = {key: saved[key] for key in READING_OPTIONS if key in saved}
    return meta


def export_checkpoint(
    ckpt_path: str | Path,
    output: str | Path,
    word_vectors: str | Path | None = None,
    keep_vectors: int = 400_000,
) -> tuple[Path, Path]:
    """Exports a checkpoint: the graph to ``output`` and the vocabulary to :func:`vocab_path` of it.

    ``word_vectors``/``keep_vectors``: as in ``Tagger.load``, the pretrained vectors of words unseen in training
    from a vectors file instead of the checkpoint's table.

    Returns:
        ``(graph path, vocabulary path)``.

    Raises:
        SeqtagInputError: for a file that is not a tagger checkpoint, or a model option the graph cannot express.
    """
    import importlib.util

    from seqtag.data.vocab import load_checkpoint
    from seqtag.tagger import Tagger

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise SeqtagInputError(f"seqtag export needs {' and '.join(missing)}: pip install 'seqtag[onnx]'")
    checkpoint = load_checkpoint(ckpt_path)
    if "hyper_parameters" not in checkpoint:
        raise SeqtagInputError(f"{ckpt_path}: not a seqtag tagger checkpoint (no hyperparameters)")
    try:
        check_exportable(checkpoint["hyper_parameters"])
    except SeqtagInputError as err:
        raise SeqtagInputError(f"{ckpt_path}: {err}") from None
    tagger = Tagger.load(ckpt_path, word_vectors=word_vectors, keep_vectors=keep_vectors)
    graph_path = export_graph(tagger, output)
    meta_path = vocab_path(graph_path)
    from seqtag.atomic import atomic_write_text

    atomic_write_text(meta_path, json.dumps(export_metadata(tagger, checkpoint), ensure_ascii=False))
    return graph_path, meta_path


def export_main(args: list[str]) -> int:
    """``seqtag export``: returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="seqtag export",
        description="Export a trained tagger to ONNX (ids in, tag ids out, Viterbi inside) with its vocabulary "
        "beside it; tag with `seqtag predict --onnx FILE --data.predict TEXT`.",
    )
    parser.add_argument("--ckpt_path", required=True, help="the tagger checkpoint (best.ckpt)")
    parser.add_argument(
        "--output", required=True, help="the ONNX file to write; the vocabulary goes to NAME.vocab.json"
    )
    parser.add_argument(
        "--word_vectors", default=None, help="vectors of unseen words from this file, not the checkpoint"
    )
    parser.add_argument("--keep_vectors", type=int, default=400_000, help="with --word_vectors: its first N words")
    options = parser.parse_args(args)
    graph_path, meta_path = export_checkpoint(
        options.ckpt_path, options.output, options.word_vectors, options.keep_vectors
    )
    print(f"Exported {options.ckpt_path} to {graph_path} (graph) and {meta_path} (vocabulary)")
    return 0
