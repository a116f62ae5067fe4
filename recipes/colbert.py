"""Plain pylate script: an Ettin encoder → a ColBERT multi-vector retriever (contrastive loss).

    python recipes/colbert.py --model runs/pretrain/final --data pairs.jsonl --output-dir runs/plain-colbert
"""

from datasets import load_dataset
from pylate import losses, models, utils
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

from _common import common_arguments, parser


def build_trainer(args) -> SentenceTransformerTrainer:
    pairs = load_dataset("json", data_files=args.data, split="train").select_columns(["query", "positive"])
    model = models.ColBERT(model_name_or_path=args.model, document_length=args.max_seq_length)
    return SentenceTransformerTrainer(model=model, train_dataset=pairs, loss=losses.Contrastive(model),
                                      args=SentenceTransformerTrainingArguments(**common_arguments(args)),
                                      data_collator=utils.ColBERTCollator(model.tokenize))


if __name__ == "__main__":
    args = parser(__doc__, batch_size=16, learning_rate=1e-3, max_seq_length=180).parse_args()
    trainer = build_trainer(args)
    trainer.train()
    trainer.model.save_pretrained(f"{args.output_dir}/final")
