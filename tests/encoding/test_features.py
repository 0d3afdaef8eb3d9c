"""The base-feature cache: computed once per text, checksummed, and never read when damaged."""

from __future__ import annotations

import logging

import numpy as np

from ragcun.encoding.cache import record_path
from ragcun.encoding.features import FeatureCache, cached_base_features
from ragcun.fingerprint import model_fingerprint
from ragcun.modeling import IsotropicGaussianEncoder, encode_base

TEXTS = ["Vitamin D and bone density.", "Statins lower LDL cholesterol.", "A cat.",
         "Vitamin D and bone density."]


def _features(enc, cache):
    return cached_base_features(enc, enc.base_modules, TEXTS, enc.max_seq_length, batch_size=2, cache=cache,
                                show_progress=False)


def test_features_are_cached_checksummed_and_a_damaged_shard_is_encoded_again(tiny_model_path, tmp_path,
                                                                                 caplog):
    enc = IsotropicGaussianEncoder(base_model=tiny_model_path, output_dim=8, max_seq_length=32)
    cache = FeatureCache(model_fingerprint(enc.base_modules), 32, root=tmp_path)
    feats, index = _features(enc, cache)
    assert feats.shape[0] == 3 and list(index) == list(dict.fromkeys(TEXTS))  # each distinct text once
    np.testing.assert_array_equal(feats, encode_base(enc, enc.base_modules, list(index), 2, False))
    np.testing.assert_array_equal(feats, enc.base_features(list(index), batch_size=2).numpy())  # one routine
    (shard,) = cache._shards()
    assert record_path(shard).is_file()

    again, _ = _features(enc, cache)  # from the cache: nothing new written
    np.testing.assert_array_equal(again, feats)
    assert cache._shards() == [shard]

    data = bytearray(shard.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last float of the table becomes inf: a silent change
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="ragcun.encoding.features"):
        healed, _ = _features(enc, cache)
    assert "checksum" in caplog.text and "encoded again" in caplog.text and str(shard) in caplog.text
    np.testing.assert_array_equal(healed, feats)

    record_path(shard).unlink()  # a shard without its record (interrupted, or an older ragcun) is not read
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragcun.encoding.features"):
        _features(enc, cache)
    assert "has no record" in caplog.text
