"""The sentence encoder: a multi-layer (bidirectional) RNN over token representations.

(B, T, E) → (B, T, D*H). Batches whose sentences all have the same length run unpacked (no padding, so the result
is the same as packed, and the fast fused kernels are used); other batches run as a PackedSequence, so the backward
direction starts at each sentence's last real token.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, _ = self.rnn(packed)
        return pad_packed_sequence(output, batch_first=True, total_length=total)[0]  # (B, T, D*H)
