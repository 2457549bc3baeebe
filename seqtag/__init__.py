"""seqtag: BiLSTM(-CRF) sequence labeling (NER, POS tagging, chunking) with PyTorch Lightning."""

__version__ = "0.1.0"
