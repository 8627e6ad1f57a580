"""Hugging Face transformers and diffusers models, converted without ceremony.

Tiny models built from config objects (nothing downloaded), in float64 so that
the per-example forward is compared with ``wm.at`` per example to 1e-10.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import weightmanifold as wm

transformers = pytest.importorskip("transformers")
diffusers = pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from diffusers import UNet2DModel  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    ViTConfig,
    ViTForImageClassification,
)

transformers.logging.set_verbosity_error()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def bert() -> torch.nn.Module:
    return BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).double().eval()


def gpt2() -> torch.nn.Module:
    return GPT2LMHeadModel(GPT2Config(
        n_embd=16, n_layer=2, n_head=2, vocab_size=50, n_positions=32, bos_token_id=0,
        eos_token_id=0, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0)).double().eval()


def vit() -> torch.nn.Module:
    return ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=3)).double().eval()


def unet() -> torch.nn.Module:
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D")).double().eval()


def convert(net: torch.nn.Module, manifold: wm.Manifold | None = None) -> wm.ManifoldModel:
    manifold = wm.Ellipse() if manifold is None else manifold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ViT's cls token and position table stay ordinary
        return wm.manifoldify(net, manifold, init="independent").eval()


IDS = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
MODELS = {
    "bert": (bert, lambda: {"input_ids": IDS}, "logits"),
    "gpt2": (gpt2, lambda: {"input_ids": IDS}, "logits"),
    "vit": (vit, lambda: {"pixel_values": torch.randn(3, 3, 8, 8, dtype=torch.float64)},
            "logits"),
    "unet": (unet, lambda: {"sample": torch.randn(3, 1, 8, 8, dtype=torch.float64),
                            "timestep": torch.tensor([10, 500, 900])}, "sample"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_per_example_forward_with_default_arguments_equals_at(name):
    make, inputs_fn, key = MODELS[name]
    model = convert(make())
    inputs = inputs_fn()
    s = torch.tensor([0.1, 0.45, 0.8], dtype=torch.float64)
    with torch.no_grad():
        y = model(**inputs, s=s)[key]
        for i in range(3):
            ref = wm.at(model, float(s[i]))(**{k: v[i : i + 1] for k, v in inputs.items()})
            assert torch.allclose(y[i : i + 1], ref[key], atol=1e-10, rtol=0)


def test_gpt2_conv1d_is_converted_and_the_embedding_tie_kept():
    model = convert(gpt2())
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Conv1D" not in kinds and "ManifoldTransposedLinear" in kinds
    assert model.module.lm_head.weight is model.module.transformer.wte.weight
    assert not any("c_attn" in n or "c_fc" in n for n in model.shared)
    plain = wm.at(model, 0.3)
    assert type(plain.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    from transformers.pytorch_utils import Conv1D

    only = wm.manifoldify(gpt2(), wm.Line(), include=[Conv1D])  # include= by type works too
    assert len(only.converted) == 8 and all(".h." in n for n in only.converted)
    assert plain.lm_head.weight is plain.transformer.wte.weight


def test_backward_and_preconditioned_step():
    model = convert(gpt2()).train()
    opt = wm.Preconditioned(torch.optim.SGD(model.parameters(), lr=0.1), model)
    before = model.module.transformer.h[0].attn.c_attn.weight.detach().clone()
    out = model(input_ids=IDS, labels=IDS, s=torch.rand(3, dtype=torch.float64))
    out.loss.backward()
    opt.step()
    assert not torch.equal(before, model.module.transformer.h[0].attn.c_attn.weight)


def test_preconditioning_a_fine_tuned_head_only():
    model = convert(bert()).train()
    head = list(model.module.classifier.parameters())
    opt = wm.Preconditioned(torch.optim.SGD(head, lr=0.1), model)
    loss = model(input_ids=IDS, labels=torch.tensor([0, 1, 2]), s=torch.rand(3)).loss
    loss.backward()
    opt.step()


def test_gradient_checkpointing_enable_matches_plain_backward():
    model = convert(gpt2()).train()
    s = torch.rand(3, dtype=torch.float64)

    def grads() -> list[torch.Tensor]:
        model.zero_grad()
        model(input_ids=IDS, labels=IDS, s=s).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    ref = grads()
    model.module.gradient_checkpointing_enable()
    assert model.module.is_gradient_checkpointing
    for a, b in zip(grads(), ref):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("name", ["gpt2", "unet"])
def test_save_pretrained_from_pretrained_round_trip(name, tmp_path):
    make, inputs_fn, key = MODELS[name]
    model = convert(make())
    model.save_pretrained(tmp_path)
    cls = type(model.module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = wm.from_pretrained(cls, tmp_path, wm.Ellipse()).double().eval()
    inputs = inputs_fn()
    s = torch.rand(3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs, s=s)[key], model(**inputs, s=s)[key],
                              atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="saved on Ellipse"):
        wm.from_pretrained(cls, tmp_path, wm.Line())


def test_safetensors_state_dict_round_trip_and_manifold_check(tmp_path):
    model = convert(bert())
    path = str(tmp_path / "m.safetensors")
    safetensors_torch.save_file(model.state_dict(), path)
    again = convert(bert())
    again.load_state_dict(safetensors_torch.load_file(path))
    with torch.no_grad():
        assert torch.allclose(again(input_ids=IDS, s=0.3).logits,
                              model(input_ids=IDS, s=0.3).logits, atol=1e-12)
    other = convert(bert(), wm.BSpline(3, degree=2, periodic=True))
    with pytest.raises(RuntimeError, match="saved from a model on Ellipse"):
        other.load_state_dict(safetensors_torch.load_file(path))


def test_trainer_with_default_arguments(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = convert(bert().float()).train()
    rows = [{"input_ids": IDS[i % 3], "labels": torch.tensor(i % 3), "s": torch.rand(())}
            for i in range(12)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4,
                             report_to="none", use_cpu=True, save_strategy="no")
    before = model.module.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(before, model.module.bert.encoder.layer[0].attention.self.query.weight)
    trainer.save_model(str(tmp_path / "final"))


def test_per_example_generate():
    model = convert(gpt2())
    prompts = IDS[:, :4]
    s = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    out = model.generate(prompts, s=s, max_new_tokens=5, do_sample=False)
    for i in range(3):
        ref = wm.at(model, float(s[i])).generate(prompts[i : i + 1], max_new_tokens=5,
                                                  do_sample=False)
        assert torch.equal(out[i : i + 1], ref)


def test_conv1d_independent_init_draws_every_basis_point():
    model = convert(gpt2())
    w = model.module.transformer.h[0].attn.c_attn.weight
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])


def test_manifold_trainer_checkpoints_a_tied_model_and_resumes(tmp_path):
    from transformers import TrainingArguments

    from weightmanifold.hf_trainer import ManifoldTrainer

    def run(steps: int, resume: bool) -> wm.ManifoldModel:
        torch.manual_seed(0)
        model = convert(gpt2().float()).train()
        rows = [{"input_ids": IDS[i % 3], "labels": IDS[i % 3], "s": torch.rand(())}
                for i in range(16)]
        args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps,
                                 per_device_train_batch_size=4, report_to="none",
                                 use_cpu=True, save_steps=2, seed=0, data_seed=0)
        trainer = ManifoldTrainer(model=model, args=args, train_dataset=rows)
        trainer.train(resume_from_checkpoint=resume or None)
        return model

    at_two = run(2, False)  # killed after step 2, its checkpoint written
    ckpt = tmp_path / "out" / "checkpoint-2"
    assert (ckpt / "weightmanifold.json").exists()
    from weightmanifold.pretrained import load_weights

    fresh = load_weights(convert(gpt2().float()), ckpt)  # the checkpoint is step 2 exactly
    for a, b in zip(fresh.parameters(), at_two.parameters()):
        assert torch.equal(a, b)
    resumed = run(4, True)
    uninterrupted = run(4, False)
    # HF's own resume is not bit-exact (a plain GPT-2 here: 4e-5 after 4 steps)
    for a, b in zip(resumed.parameters(), uninterrupted.parameters()):
        assert torch.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("name", ["gpt2"])
def test_from_pretrained_converts_what_was_converted(name, tmp_path):
    from transformers.pytorch_utils import Conv1D

    model = wm.manifoldify(gpt2(), wm.Line(), include=[Conv1D], init="independent")
    model.save_pretrained(tmp_path)
    loaded = wm.from_pretrained(GPT2LMHeadModel, tmp_path, wm.Line())
    assert loaded.converted == model.converted
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=IDS, s=0.4).logits,
                              model(input_ids=IDS, s=0.4).logits, atol=1e-12)


@pytest.mark.parametrize("name", ["gpt2", "unet"])
def test_low_rank_models_convert_forward_and_round_trip(name, tmp_path):
    """GPT-2 (Conv1D, tied embedding/head) and a diffusers UNet at rank 2: equal to wm.at per
    example, and save_pretrained/from_pretrained rebuilds the low-rank layers."""
    make, inputs_fn, key = MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # rank 2, or a layer's own rank where smaller (the UNet's 1-channel output conv)
        model = wm.manifoldify(make(), wm.Ellipse(), init=0.5, rank=lambda _n, m: min(
            2, m.weight.shape[0] // getattr(m, "groups", 1), m.weight[0].numel())
            if getattr(m, "weight", None) is not None and m.weight.ndim >= 2 else 2).eval()
    assert any(isinstance(m, wm.layers.LowRankOp) for m in model.modules())
    inputs = inputs_fn()
    s = torch.rand(3, dtype=torch.float64)
    with torch.no_grad():
        out = model(**inputs, s=s)[key]
        for i in range(3):
            one = {k: v[i:i + 1] if torch.is_tensor(v) and v.shape[0] == 3 else v
                   for k, v in inputs.items()}
            assert torch.allclose(out[i:i + 1], wm.at(model, s[i])(**one)[key], atol=1e-9)
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = wm.from_pretrained(type(model.module), tmp_path, wm.Ellipse()).double().eval()
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs, s=s)[key], out, atol=1e-12, rtol=0)
