"""The sentence encoder: a multi-layer (bidirectional) RNN over token representations.

(B, T, E) → (B, T, D*H). Batches whose sentences all have the same length run unpacked (no padding, so the result
is the same as packed, and the fast fused kernels are used); other batches run as a PackedSequence, so the backward
direction starts at each sentence's last real token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtag.modules.dropout import Dropout

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RNNEncoder(nn.Module):
    """Stacked RNN (LSTM, GRU or tanh RNN) over packed sequences.

    Args:
        input_size: E, the token representation size.
        hidden_size: H, hidden size per direction. Default: 200
        num_layers: stacked layers. Default: 1
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``. Default: ``"lstm"``
        bidirectional: run both directions and concatenate them. Default: True
        dropout: dropout between layers (as in ``nn.LSTM``). Default: 0.0
        implementation: ``"torch"`` (cuDNN / oneDNN kernels) or ``"reference"`` (the LSTM written from its
            equations in :mod:`seqtag.modules.lstm`, same parameters and results, slower). Default: ``"torch"``

    Shape:
        inputs: (B, T, E);  lengths: (B,) long, or None when no sequence is padded;  returns: (B, T, D*H), zeros at
        padded positions.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 200,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.0,
        implementation: str = "torch",
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell should be one of {sorted(CELLS)}, got {cell!r}")
        if implementation not in ("torch", "reference"):
            raise ValueError(f"implementation should be 'torch' or 'reference', got {implementation!r}")
        if implementation == "reference" and cell != "lstm":
            raise ValueError(f"implementation='reference' exists for cell='lstm' only, got cell={cell!r}")
        self.implementation = implementation
        kwargs = dict(batch_first=True, bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        if implementation == "reference":
            from seqtag.modules.lstm import ReferenceLSTM

            self.rnn = ReferenceLSTM(input_size, hidden_size, num_layers, **kwargs)
        else:
            self.rnn = CELLS[cell](input_size, hidden_size, num_layers, **kwargs)
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        total = inputs.shape[1]
        if self.implementation == "reference":
            if lengths is None:
                lengths = torch.full(inputs.shape[:1], total, dtype=torch.long, device=inputs.device)
            return self.rnn(inputs, lengths=lengths)[0]  # (B, T, D*H)
        if lengths is None or bool((lengths == total).all()):
            return self.rnn(inputs)[0]  # (B, T, D*H): no padding, nothing to pack
        if inputs.device.type == "cpu":
            return self._padded_by_direction(inputs, lengths)
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        return pad_packed_sequence(output, batch_first=True, total_length=total)[0]  # (B, T, D*H)

    def _padded_by_direction(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """A padded batch without packing, one fused call per direction and layer (the CPU path).

        oneDNN has no kernel for packed sequences: ``nn.LSTM`` then steps a cell per time step, with autograd
        nodes at each. Padding at the end does not change the forward direction's states at real tokens, and the
        backward direction runs forward over each sequence's tokens reversed in place (padding still at the end),
        so both take the fused kernel and give the packed result (``tests/modules/test_encoder.py``). Decoding
        ``eng.testb`` in sorted batches of 256 at NCRF++ size: 0.41 s packed, 0.34 s this way.

        Shape:
            inputs: (B, T, E);  lengths: (B,);  returns: (B, T, D*H), zeros at padded positions
        """
        rnn, t = self.rnn, inputs.shape[1]
        position = torch.arange(t, device=inputs.device)
        real = position < lengths.unsqueeze(1)  # (B, T)
        reverse = torch.where(real, lengths.unsqueeze(1) - 1 - position, position)  # (B, T), its own inverse
        layer_input = inputs
        for layer in range(rnn.num_layers):
            output = self._direction(layer_input, layer, "")  # (B, T, H)
            if rnn.bidirectional:
                flipped = layer_input.gather(1, reverse.unsqueeze(2).expand_as(layer_input))
                backward = self._direction(flipped, layer, "_reverse")  # (B, T, H)
                output = torch.cat([output, backward.gather(1, reverse.unsqueeze(2).expand_as(backward))], dim=2)
            if layer + 1 < rnn.num_layers:
                output = F.dropout(output, rnn.dropout, self.training)
            layer_input = output
        return layer_input * real.unsqueeze(2)  # (B, T, D*H)

    def _direction(self, inputs: torch.Tensor, layer: int, suffix: str) -> torch.Tensor:
        """One direction of one layer of ``self.rnn`` over (B, T, E) inputs, from zero states: (B, T, H)."""
        rnn = self.rnn
        params = [getattr(rnn, f"{name}_l{layer}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        zeros = inputs.new_zeros(1, inputs.shape[0], rnn.hidden_size)
        if isinstance(rnn, nn.LSTM):
            return torch.lstm(inputs, (zeros, zeros), params, True, 1, 0.0, self.training, False, True)[0]
        if isinstance(rnn, nn.GRU):
            return torch.gru(inputs, zeros, params, True, 1, 0.0, self.training, False, True)[0]
        step = torch.rnn_tanh if rnn.nonlinearity == "tanh" else torch.rnn_relu
        return step(inputs, zeros, params, True, 1, 0.0, self.training, False, True)[0]


LAYOUT_KEYS = ("document_source", "document_target", "document_lengths")


def document_layout(lengths: torch.Tensor, documents: torch.Tensor, index: torch.Tensor, width: int) -> dict:
    """Where each token of a batch goes when its documents' sentences are joined, as index tensors.

    Computed where the batch is built (on the CPU, by the data module before the batch moves to its device), so the
    encoder itself reads no value on the host and every shape it makes is that of a layout tensor: no host sync and
    no data-dependent shape on a GPU.

    Shape:
        lengths, documents, index: (B,);  width: T, the batch's padded length;
        returns: ``document_source`` (R, L), for each step of each joined document the flat position (``b * T + t``)
        of its token in the batch, ``B * T`` at padding; ``document_target`` (B, T), for each token its flat
        position (``r * L + l``) in the joined documents, ``R * L`` at padding; ``document_lengths`` (R,)
    """
    batch = lengths.shape[0]
    real = torch.arange(width, device=lengths.device) < lengths[:, None]  # (B, T)
    order = torch.argsort(index)  # (B,) rows in reading order
    ordered_documents = documents[order]
    starts = torch.ones(batch, dtype=torch.long, device=lengths.device)
    starts[1:] = (ordered_documents[1:] != ordered_documents[:-1]).long()
    row_run = torch.cumsum(starts, 0) - 1  # (B,) which joined document each row (in reading order) belongs to
    ordered_real = real[order]  # (B, T)
    token_run = row_run[:, None].expand(batch, width)[ordered_real]  # (N,)
    run_lengths = torch.bincount(token_run, minlength=1)  # (R,)
    run_starts = torch.cumsum(run_lengths, 0) - run_lengths  # (R,)
    position = torch.arange(token_run.shape[0], device=lengths.device) - run_starts[token_run]  # (N,)
    joined_width = max(int(run_lengths.max()), 1)
    flat_token = (order[:, None] * width + torch.arange(width, device=lengths.device))[ordered_real]  # (N,)
    source = torch.full((run_lengths.shape[0], joined_width), batch * width, dtype=torch.long, device=lengths.device)
    source[token_run, position] = flat_token
    target = torch.full((batch * width,), run_lengths.shape[0] * joined_width, dtype=torch.long, device=lengths.device)
    target[flat_token] = token_run * joined_width + position
    return dict(zip(LAYOUT_KEYS, (source, target.view(batch, width), run_lengths)))


def with_document_layout(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` (built on the CPU, with ``lengths``, ``document``, ``index`` and ``word_ids``) and its
    :func:`document_layout`, for a model with ``document_context``, before the batch moves to its device."""
    if LAYOUT_KEYS[0] in batch:
        return batch
    layout = document_layout(batch["lengths"], batch["document"], batch["index"], batch["word_ids"].shape[1])
    return {**batch, **layout}


class DocumentEncoder(nn.Module):
    """A stacked bidirectional RNN that reads each document's sentences as one sequence.

    The rows of a batch that share a document id are joined in reading order (by ``index``), so a sentence's states
    also depend on the sentences around it: a line of a results table ("Akram 4-0-12-1") is read after the lines
    that say what the table is about. Batches must hold whole documents (or consecutive pieces of one).

    Both directions run unpacked on right-padded documents: the forward RNN meets padding only after a document's
    last token, and the backward RNN reads each document reversed (its padding still at the end), then its states
    are put back in reading order. The result is exactly that of packed sequences, and much faster on CPU, where a
    PackedSequence of a few long documents costs a step per token of the longest one at a small batch.

    Where the tokens go is :func:`document_layout`: given with the batch (the data module adds it on the CPU), the
    forward pass has fixed shapes and no host sync; without it, it is computed here from the batch.

    Args:
        input_size: E, the token representation size.
        hidden_size: H, hidden size per direction. Default: 200
        num_layers: stacked layers. Default: 1
        cell: ``"lstm"``, ``"gru"`` or ``"rnn"``. Default: ``"lstm"``
        dropout: dropout between layers (as in ``nn.LSTM``). Default: 0.0

    Shape:
        inputs: (B, T, E);  lengths: (B,) real tokens per row;  documents: (B,) document ids;  index: (B,) each
        row's position in its split (reading order);  layout: :func:`document_layout`'s tensors, or None;
        returns: (B, T, 2H), zeros at padded positions.
    """

    def __init__(
        self, input_size: int, hidden_size: int = 200, num_layers: int = 1, cell: str = "lstm", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell should be one of {sorted(CELLS)}, got {cell!r}")
        self.forward_rnns = nn.ModuleList()
        self.backward_rnns = nn.ModuleList()
        size = input_size
        for _ in range(num_layers):
            self.forward_rnns.append(CELLS[cell](size, hidden_size, batch_first=True))
            self.backward_rnns.append(CELLS[cell](size, hidden_size, batch_first=True))
            size = 2 * hidden_size
        self.dropout = Dropout(dropout if num_layers > 1 else 0.0)  # a cheaper mask on CPU
        self.output_size = 2 * hidden_size

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: torch.Tensor,
        documents: torch.Tensor,
        index: torch.Tensor,
        layout: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        batch, length, size = inputs.shape
        if layout is None:
            layout = document_layout(lengths, documents, index, length)
        source, target, run_lengths = (layout[key] for key in LAYOUT_KEYS)
        # A zero row after the flat tokens: padding slots of the joined documents read it.
        flat = torch.cat([inputs.reshape(batch * length, size), inputs.new_zeros(1, size)])  # (B * T + 1, E)
        joined = flat[source]  # (R, L, E)
        # reversal[r, t]: where step t of document r's reversed reading is; padding stays in place.
        steps = torch.arange(source.shape[1], device=inputs.device)[None, :]  # (1, L)
        real = steps < run_lengths[:, None]  # (R, L)
        reversal = torch.where(real, run_lengths[:, None] - 1 - steps, steps)  # (R, L)
        states = joined
        for layer, (forward_rnn, backward_rnn) in enumerate(zip(self.forward_rnns, self.backward_rnns)):
            if layer:
                states = self.dropout(states)
            flip = reversal[..., None].expand(-1, -1, states.shape[-1])
            forward_states = forward_rnn(states)[0]  # (R, L, H)
            backward_states = backward_rnn(states.gather(1, flip))[0]  # (R, L, H), reversed reading
            flip = reversal[..., None].expand(-1, -1, backward_states.shape[-1])
            states = torch.cat([forward_states, backward_states.gather(1, flip)], dim=-1)  # (R, L, 2H)
        out = states.reshape(-1, self.output_size)
        out = torch.cat([out, out.new_zeros(1, self.output_size)])  # (R * L + 1, 2H): padding reads the zero row
        return out[target]  # (B, T, 2H)
