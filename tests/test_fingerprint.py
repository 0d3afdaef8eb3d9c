"""One fingerprint for a model everywhere: it follows the weights and the encoding setup, not the class
the model was loaded as."""

from __future__ import annotations

import torch

from ragcun.fingerprint import model_fingerprint, text_key, texts_fingerprint


def test_model_fingerprint_follows_every_weight_and_setting(tiny_model_path):
    from sentence_transformers import SentenceTransformer

    from ragcun.modeling import IsotropicGaussianEncoder

    a = SentenceTransformer(tiny_model_path, device="cpu")
    b = IsotropicGaussianEncoder.from_pretrained(tiny_model_path, device="cpu")
    fp = model_fingerprint(a)
    assert fp == model_fingerprint(b)  # the same weights loaded as another class: the same model
    with torch.no_grad():
        a[0].auto_model.encoder.layer[1].output.dense.weight[3, 5] += 1e-6  # one value, deep inside
    assert model_fingerprint(a) != fp
    b.max_seq_length = 16
    assert model_fingerprint(b) != fp
    assert model_fingerprint(list(b)) != model_fingerprint(b)  # a module list has no encoding settings


def test_texts_fingerprint_and_keys():
    base = texts_fingerprint(["a", "b"], ["x", "y"])
    assert base == texts_fingerprint(["a", "b"], ["x", "y"])
    assert base != texts_fingerprint(["a", "b"], ["x", "z"])
    assert base != texts_fingerprint(["b", "a"], ["y", "x"])
    assert base != texts_fingerprint(["a", "b"], ["x", "y"], extra={"k1": 0.9})
    assert len(text_key("x")) == 32 and text_key("x") != text_key("y")
