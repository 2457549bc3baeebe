"""seqtag: BiLSTM(-CRF) sequence labeling (NER, POS tagging, chunking) with PyTorch Lightning.

``from seqtag import Tagger`` gives the model and its tagging API (``Tagger.load(ckpt).tag(sentences)``).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Tagger", "TaggingDataModule", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `seqtag --help` and the readers should not pay for torch and Lightning up front.
    if name == "Tagger":
        from seqtag.tagger import Tagger

        return Tagger
    if name == "TaggingDataModule":
        from seqtag.data.datamodule import TaggingDataModule

        return TaggingDataModule
    raise AttributeError(f"module 'seqtag' has no attribute {name!r}")
