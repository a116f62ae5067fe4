"""ettin-ft: fine-tune, pretrain and continue the Ettin suite of paired encoders and decoders.

The public API is imported lazily, so `python -m ettin_ft.<module>` starts without loading every library and
`import ettin_ft` stays cheap. Pretraining is ``ettin_ft.run_pretraining(PretrainConfig(...))`` and the generate and
fill-mask helpers live in their modules (``from ettin_ft.generate import generate``, ``from ettin_ft.fill_mask import
fill_mask``): ``ettin_ft.pretrain``, ``ettin_ft.generate`` and ``ettin_ft.fill_mask`` name the command modules.
"""

from importlib import import_module

from ._versions import warn_on_mismatch
from .auto_classes import register_when_transformers_loads

__version__ = "0.1.0"

_EXPORTS = {
    "EttinError": ".errors",
    "OFFICIAL_SIZES": ".registry",
    "SHAPES": ".registry",
    "hub_id": ".registry",
    "resolve": ".registry",
    "Runtime": ".runtime",
    "choose_runtime": ".runtime",
    "locate": ".hub",
    "build_model": ".models",
    "load_model": ".models",
    "load_tokenizer": ".models",
    "locate_model": ".models",
    "model_config": ".models",
    "add_chat_template": ".tokenizer",
    "train_tokenizer": ".tokenizer",
    "BeirSplit": ".data.loading",
    "load_beir": ".data.loading",
    "load_data": ".data.loading",
    "SyntheticWorld": ".data.synthetic",
    "train_dense": ".dense",
    "DenseConfig": ".dense",
    "ClassifyConfig": ".classify",
    "train_colbert": ".colbert",
    "train_sparse": ".sparse",
    "train_rerank": ".rerank",
    "train_sft": ".sft",
    "train_classify": ".classify",
    "TagConfig": ".tag",
    "train_tag": ".tag",
    "PretrainConfig": ".pretrain",
    "run_pretraining": ".training.loop",
    "StudyConfig": ".compare",
    "run_study": ".compare",
    "BiasConfig": ".bias",
    "run_probe": ".bias",
    "convert_model": ".convert",
    "load_generator": ".generate",
    "add_chat_support": ".tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module, _, attribute = _EXPORTS[name].partition(":")
        return getattr(import_module(module, __name__), attribute or name)
    raise AttributeError(f"module 'ettin_ft' has no attribute {name!r}")


warn_on_mismatch()
register_when_transformers_loads()  # AutoModelForTokenClassification loads ettin-ft's decoder taggers
