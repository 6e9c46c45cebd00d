"""Callbacks for training frameworks: :mod:`tapml.integrations.transformers` (Hugging Face
``Trainer``) and :mod:`tapml.integrations.lightning` (Lightning ``Trainer``)."""
