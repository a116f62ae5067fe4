"""A token-classification head over the ModernBERT decoder, which transformers has only for encoders
(``ModernBertForTokenClassification``). Laid out as the encoder's (prediction head → dropout → classifier), so the two
architectures are tagged alike; ``import ettin_ft`` registers it with ``AutoModelForTokenClassification``.

Each token sees its left context. With ``bidirectional`` in the config (``--bidirectional``), the decoder attends both
ways, as the encoder does: fine-tuned without its causal mask, the way LLM2Vec turns decoders into encoders.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForTokenClassification
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.modernbert_decoder.configuration_modernbert_decoder import ModernBertDecoderConfig
from transformers.models.modernbert_decoder.modeling_modernbert_decoder import (ModernBertDecoderModel,
                                                                                ModernBertDecoderPredictionHead,
                                                                                ModernBertDecoderPreTrainedModel)


class ModernBertDecoderForTokenClassification(ModernBertDecoderPreTrainedModel):
    def __init__(self, config: ModernBertDecoderConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = ModernBertDecoderModel(config)
        self.head = ModernBertDecoderPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels, bias=config.classifier_bias)
        self.bidirectional = bool(getattr(config, "bidirectional", False))
        for layer in self.model.layers:  # flash attention and SDPA without a mask read the flag itself
            layer.attn.is_causal = not self.bidirectional
        self.post_init()

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        if module is self.classifier:  # as ModernBertDecoderForSequenceClassification's classifier (transformers'
            std = self.config.hidden_size**-0.5  # init functions leave weights loaded from a checkpoint alone)
            init.trunc_normal_(module.weight, std=std, a=-3 * std, b=3 * std)
            if module.bias is not None:
                init.zeros_(module.bias)

    def _bidirectional_masks(self, input_ids, inputs_embeds, attention_mask) -> dict:
        reference = inputs_embeds if inputs_embeds is not None else torch.empty(
            (*input_ids.shape, 0), dtype=self.dtype, device=input_ids.device)  # only its shape, dtype and device count
        arguments = {"config": self.config, "inputs_embeds": reference, "attention_mask": attention_mask}
        return {"full_attention": create_bidirectional_mask(**arguments),
                "sliding_attention": create_bidirectional_sliding_window_mask(**arguments)}

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, **kwargs) -> TokenClassifierOutput:
        if self.bidirectional and not isinstance(attention_mask, dict):
            attention_mask = self._bidirectional_masks(input_ids, inputs_embeds, attention_mask)
        outputs = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=inputs_embeds, use_cache=False, **kwargs)
        logits = self.classifier(self.drop(self.head(outputs.last_hidden_state)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1).to(logits.device))
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                     attentions=outputs.attentions)


def register() -> None:
    """``AutoModelForTokenClassification`` builds and loads this class for ModernBERT decoder configs."""
    AutoModelForTokenClassification.register(ModernBertDecoderConfig, ModernBertDecoderForTokenClassification,
                                             exist_ok=True)
