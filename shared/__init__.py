"""fedehr.shared: code used by both the hospital side and the consortium side.

MEDS data access and ETLs, tokenizer and vocabulary, the model, checkpoint
format and signing, config schemas, metrics and PKI live here. This package
never imports fedehr.client or fedehr.server.
"""

__version__ = "0.1.0"
