"""Train the shipped Hugging Face example, a small BERT text classifier built from a
`BertConfig` (no download), and write it with ``save_pretrained`` plus its eval set.

    python -m studies.training.train_hf_example      # needs .[hf]; about 5 minutes on one core

The task is the token classifier example's (`studies.examples.token_classifier.make_data`:
which of 4 token groups occurs most among a sequence's real tokens), so its data is generated
deterministically: training seed 0, eval seed 1. The study:

    autotune study --model hf:studies/data/hf_bert_classifier \\
        --eval-data studies/data/hf_bert_classifier_eval.pt
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from studies.examples import token_classifier as task

DATA = Path(__file__).resolve().parent.parent / "data"
MODEL_DIR = DATA / "hf_bert_classifier"
EVAL_FILE = DATA / "hf_bert_classifier_eval.pt"
EVAL_ROWS = 1000


def config():  # -> transformers.BertConfig
    from transformers import BertConfig

    return BertConfig(
        vocab_size=task.VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=task.SEQ_LEN,
        type_vocab_size=1,
        pad_token_id=0,
        num_labels=task.GROUPS,
    )


def main() -> None:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    torch.set_num_threads(1)  # faster than 2 for a model this small on a shared machine
    model = BertForSequenceClassification(config())
    inputs, labels = task.make_data(50_000, seed=0)
    steps, batch, lr = 1500, 64, 3e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(labels), (batch,), generator=gen)
        out = model(**{k: v[idx] for k, v in inputs.items()})
        loss = F.cross_entropy(out.logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    model.eval()
    eval_inputs, eval_labels = task.make_data(EVAL_ROWS, seed=1)
    with torch.no_grad():
        acc = (model(**eval_inputs).logits.argmax(1) == eval_labels).double().mean().item()
    model.save_pretrained(MODEL_DIR)
    torch.save((eval_inputs, eval_labels), EVAL_FILE)
    print(f"hf_bert_classifier: top-1 {100 * acc:.2f}% on the study's {EVAL_ROWS} sequences")


if __name__ == "__main__":
    main()
