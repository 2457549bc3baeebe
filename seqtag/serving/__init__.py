"""``seqtag serve``: a trained tagger behind an HTTP JSON API (LitServe).

:mod:`seqtag.serving.requests` checks request bodies (pure Python); :mod:`seqtag.serving.server` holds the
``LitAPI``, the server and the command. Neither is imported here: ``import seqtag.serving`` needs no LitServe.
"""
