"""Neural modules of seqtag.

Shape legend used in every docstring of this package:
    B = batch size, T = sequence length in tokens, C = characters per token, E = embedding size,
    H = hidden size per direction, D = 2 if bidirectional else 1, K = number of tags.
``mask`` is a (B, T) bool tensor, True for real tokens; ``mask[:, 0]`` is all True.
"""
