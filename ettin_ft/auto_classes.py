"""ettin-ft's model classes in transformers' Auto classes, registered when transformers loads them.

``import ettin_ft`` must stay cheap (no torch), yet ``AutoModelForTokenClassification.from_pretrained`` must build
the ModernBERT decoder's tagger (``decoder_tagger``) once ettin_ft is imported. So the registration runs right after
transformers' ``modeling_auto`` module is first imported, or at once if it already was.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from importlib.abc import MetaPathFinder

AUTO_MODELS = "transformers.models.auto.modeling_auto"


def register_model_classes() -> None:
    """Register, or warn in one line: this runs inside whatever import first loads transformers' Auto classes, which
    must not fail because of ettin-ft (a transformers release without the APIs the tagger uses)."""
    try:
        from .decoder_tagger import register
    except ImportError as error:
        warnings.warn(f"ettin-ft: the ModernBERT decoder's token classifier is unavailable with this transformers "
                      f"({error}); AutoModelForTokenClassification will not load ettin-ft decoder taggers", stacklevel=2)
        return
    register()


class _RegisterWhenImported(MetaPathFinder):
    """Finds nothing itself: it lets the usual finders load ``modeling_auto``, then registers."""

    def find_spec(self, name, path, target=None):
        if name != AUTO_MODELS:
            return None
        sys.meta_path.remove(self)  # once, and not for the look-up below
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            register_model_classes()

        spec.loader.exec_module = exec_module
        return spec


def register_when_transformers_loads() -> None:
    if AUTO_MODELS in sys.modules:
        register_model_classes()
    elif not any(isinstance(finder, _RegisterWhenImported) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenImported())
