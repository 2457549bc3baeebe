"""The commands of ``seqtag``, each imported only when it runs (``seqtag --help`` and ``seqtag score`` start without
torch): :mod:`seqtag.commands.tagger` (``fit``, ``validate``, ``test``, ``predict``) and :mod:`seqtag.commands.lm`
(``seqtag lm``). ``seqtag score`` is :mod:`seqtag.score`; the dispatch table is in :mod:`seqtag.cli`.
"""
