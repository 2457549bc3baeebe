"""A reference LSTM written from the equations, with ``torch.nn.LSTM``'s parameter layout.

``ReferenceLSTM`` loads ``nn.LSTM`` state dicts (and the reverse) and gives the same outputs, final states and
gradients, including for variable-length batches where it matches ``pack_padded_sequence`` + ``nn.LSTM`` +
``pad_packed_sequence(..., total_length=T)``. It is slow (a Python loop over time) and exists to document and
test what the encoder computes.

Reference: Hochreiter & Schmidhuber 1997; gate layout and initialization of ``torch.nn.LSTM``
(pytorch/pytorch ``torch/nn/modules/rnn.py``).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def lstm_cell(x_proj: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, bias_hh: Tensor | None) -> tuple[Tensor, Tensor]:
    """One LSTM step given the already projected input ``x W_ih^T + b_ih``.

    Args:
        x_proj: input projection of this step.
        h: previous hidden state.
        c: previous cell state.
        weight_hh: (4H, H) recurrent weights, gates in the order i, f, g, o.
        bias_hh: (4H,) recurrent bias or None.

    Returns:
        ``(h_t, c_t)``.

    Shape:
        x_proj: (B, 4H)
        h, c: (B, H)
        returns: (B, H), (B, H)
    """
    gates = x_proj + F.linear(h, weight_hh, bias_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class ReferenceLSTMCell(nn.Module):
    r"""LSTM cell with the parameters of ``torch.nn.LSTMCell``.

    .. math::
        \begin{array}{ll}
        i_t = \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi}) \\
        f_t = \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf}) \\
        g_t = \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg}) \\
        o_t = \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho}) \\
        c_t = f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t = o_t \odot \tanh(c_t)
        \end{array}

    ``weight_ih`` stacks :math:`W_{ii}, W_{if}, W_{ig}, W_{io}` row-wise (the order i, f, g, o of torch),
    likewise ``weight_hh``, ``bias_ih`` and ``bias_hh``.

    Args:
        input_size: E. Default: required.
        hidden_size: H. Default: required.
        bias: use ``bias_ih`` and ``bias_hh``. Default: ``True``

    Attributes:
        weight_ih: (4H, E), weight_hh: (4H, H), bias_ih: (4H,), bias_hh: (4H,); all initialized
            from :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})`.

    Shape:
        input: (B, E) float
        hx: ((B, H), (B, H)) or None for zeros
        returns: ((B, H), (B, H))

    Example:
        >>> cell = ReferenceLSTMCell(4, 3)
        >>> h, c = cell(torch.randn(2, 4))
        >>> h.shape, c.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        if input.dim() != 2 or input.size(1) != self.input_size:
            raise ValueError(f"Expected input of shape (B, {self.input_size}), got {tuple(input.shape)}")
        if hx is None:
            zeros = input.new_zeros(input.size(0), self.hidden_size)
            hx = (zeros, zeros)
        x_proj = F.linear(input, self.weight_ih, self.bias_ih)  # (B, 4H)
        return lstm_cell(x_proj, hx[0], hx[1], self.weight_hh, self.bias_hh)


class ReferenceLSTM(nn.Module):
    r"""Multi-layer, optionally bidirectional LSTM with the parameters and results of ``torch.nn.LSTM``.

    Each layer applies the equations of :class:`ReferenceLSTMCell` at every time step; layer :math:`l > 0` reads
    the (dropped-out, in training) output of layer :math:`l - 1`. The reverse direction reads each sequence from
    its last real token to its first.

    Args:
        input_size: E. Default: required.
        hidden_size: H. Default: required.
        num_layers: number of stacked layers. Default: 1
        bias: use ``bias_ih_l{k}`` and ``bias_hh_l{k}``. Default: ``True``
        batch_first: input and output are (B, T, ...) instead of (T, B, ...). Default: ``True``
        dropout: dropout probability on the outputs of every layer but the last, in training only. Default: 0.0
        bidirectional: add a reverse direction (parameters with the ``_reverse`` suffix). Default: ``False``

    Inputs: input, hx, lengths
        input: (B, T, E) if ``batch_first`` else (T, B, E).
        hx: ``(h_0, c_0)``, each (num_layers * D, B, H), index ``layer * D + direction``; zeros if None.
        lengths: (B,) long, real length of each sequence (1 <= length <= T); None means all T.

    Outputs: output, (h_n, c_n)
        output: (B, T, D * H) if ``batch_first`` else (T, B, D * H); zero at positions ``>= lengths``.
        h_n, c_n: (num_layers * D, B, H), the states after each sequence's last real token (forward direction)
        or after its first token (reverse direction).

    Attributes:
        weight_ih_l{k}{suffix}: (4H, E) for k = 0, (4H, D * H) otherwise.
        weight_hh_l{k}{suffix}: (4H, H).
        bias_ih_l{k}{suffix}, bias_hh_l{k}{suffix}: (4H,).
        All initialized from :math:`\mathcal{U}(-1/\sqrt{H}, 1/\sqrt{H})`, as ``nn.LSTM``.

    Note:
        With ``lengths``, results equal ``pack_padded_sequence(input, lengths, enforce_sorted=False)`` through
        ``nn.LSTM`` then ``pad_packed_sequence(..., total_length=T)``. Inputs at padded positions get no gradient.

    Shape:
        input: (B, T, E) float
        lengths: (B,) long
        returns: (B, T, D * H), ((L * D, B, H), (L * D, B, H)) with L = num_layers

    Example:
        >>> lstm = ReferenceLSTM(4, 3, num_layers=2, bidirectional=True)
        >>> reference = nn.LSTM(4, 3, num_layers=2, bidirectional=True, batch_first=True)
        >>> _ = reference.load_state_dict(lstm.state_dict())
        >>> x = torch.randn(2, 5, 4)
        >>> output, (h_n, c_n) = lstm(x)
        >>> output.shape, h_n.shape
        (torch.Size([2, 5, 6]), torch.Size([4, 2, 3]))
        >>> torch.allclose(output, reference(x)[0], atol=1e-6)
        True
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        _check_size("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout should be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout option adds dropout after all but last recurrent layer, so non-zero dropout expects "
                f"num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1

        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                names = self._names(layer, suffix)
                setattr(self, names[0], nn.Parameter(torch.empty(4 * hidden_size, layer_input)))
                setattr(self, names[1], nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
                if bias:
                    setattr(self, names[2], nn.Parameter(torch.empty(4 * hidden_size)))
                    setattr(self, names[3], nn.Parameter(torch.empty(4 * hidden_size)))
        self.reset_parameters()

    def _suffixes(self) -> list[str]:
        return ["", "_reverse"][: self.num_directions]

    @staticmethod
    def _names(layer: int, suffix: str) -> tuple[str, str, str, str]:
        return (
            f"weight_ih_l{layer}{suffix}",
            f"weight_hh_l{layer}{suffix}",
            f"bias_ih_l{layer}{suffix}",
            f"bias_hh_l{layer}{suffix}",
        )

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if not self.batch_first:
            s += ", batch_first=False"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if input.dim() != 3 or input.size(2) != self.input_size:
            expected = "(B, T, {})" if self.batch_first else "(T, B, {})"
            raise ValueError(f"Expected input of shape {expected.format(self.input_size)}, got {tuple(input.shape)}")
        x = input if self.batch_first else input.transpose(0, 1)  # (B, T, E)
        b, t, _ = x.shape
        states = self.num_layers * self.num_directions
        if hx is None:
            zeros = x.new_zeros(states, b, self.hidden_size)
            hx = (zeros, zeros)
        for name, state in zip(("h_0", "c_0"), hx):
            if state.shape != (states, b, self.hidden_size):
                raise ValueError(f"Expected {name} of shape {(states, b, self.hidden_size)}, got {tuple(state.shape)}")
        valid = None
        if lengths is not None:
            if lengths.shape != (b,):
                raise ValueError(f"Expected lengths of shape {(b,)}, got {tuple(lengths.shape)}")
            if bool((lengths < 1).any()) or bool((lengths > t).any()):
                raise ValueError(f"lengths should be in [1, {t}], got {lengths.tolist()}")
            positions = torch.arange(t, device=x.device)
            valid = (positions < lengths.to(x.device).unsqueeze(1)).unsqueeze(2)  # (B, T, 1)

        h_n, c_n = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            outputs = []
            for direction, suffix in enumerate(self._suffixes()):
                w_ih, w_hh, b_ih, b_hh = (getattr(self, n, None) for n in self._names(layer, suffix))
                index = layer * self.num_directions + direction
                out, (h, c) = self._run_direction(
                    x, hx[0][index], hx[1][index], w_ih, w_hh, b_ih, b_hh, valid, reverse=direction == 1
                )
                outputs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = torch.cat(outputs, dim=2)  # (B, T, D * H)
        output = x if self.batch_first else x.transpose(0, 1)
        return output, (torch.stack(h_n), torch.stack(c_n))

    @staticmethod
    def _run_direction(
        x: Tensor,
        h: Tensor,
        c: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        valid: Tensor | None,
        reverse: bool,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One direction of one layer.

        Padded steps keep the state unchanged and output zeros, so the forward direction ends with the state
        at the last real token and the reverse direction starts from ``h`` at the last real token.

        Args:
            x: (B, T, E_layer) layer input.
            h, c: (B, H) initial states.
            weight_ih, weight_hh, bias_ih, bias_hh: this direction's parameters.
            valid: (B, T, 1) bool, True at real tokens, or None when every position is real.
            reverse: run from t = T - 1 down to 0.

        Returns:
            ``(output (B, T, H), (h_n (B, H), c_n (B, H)))``.
        """
        x_proj = F.linear(x, weight_ih, bias_ih)  # (B, T, 4H)
        steps = range(x.size(1) - 1, -1, -1) if reverse else range(x.size(1))
        outputs = [None] * x.size(1)
        for i in steps:
            h_new, c_new = lstm_cell(x_proj[:, i], h, c, weight_hh, bias_hh)  # (B, H)
            if valid is None:
                h, c = h_new, c_new
                outputs[i] = h_new
            else:
                h = torch.where(valid[:, i], h_new, h)
                c = torch.where(valid[:, i], c_new, c)
                outputs[i] = torch.where(valid[:, i], h_new, 0)
        return torch.stack(outputs, dim=1), (h, c)  # (B, T, H)


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} should be a positive int, got {value!r}")
