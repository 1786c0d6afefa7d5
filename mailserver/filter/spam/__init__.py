"""Content classifiers: the tokenizer, naive Bayes, logistic regression and the combined,
explainable :class:`~mailserver.filter.spam.model.SpamModel` with its LMDB store."""

from mailserver.filter.spam.model import Classification, ModelError, ModelStore, SpamModel

__all__ = ["Classification", "ModelError", "ModelStore", "SpamModel"]
