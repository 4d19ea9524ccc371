"""load_pipeline / get_pipeline: demo, real pipeline directories, bad paths, devices, the cache."""

import json
import re
import threading

import pytest
import torch

from normguide.diffusion import (
    clear_pipeline_cache,
    generate_images,
    get_pipeline,
    load_pipeline,
)
from normguide.diffusion.loading import local_revision


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Demo pipelines written with save_pretrained, as a real checkpoint directory would be."""
    paths = {}

    def save(family):
        if family not in paths:
            path = tmp_path_factory.mktemp(f"ckpt-{family}")
            load_pipeline(f"demo:{family}").pipe.save_pretrained(path)
            paths[family] = path
        return paths[family]

    return save


@pytest.mark.parametrize("family", ["sd1", "sd2-v", "sdxl"])
def test_saved_pipeline_loads_and_matches_in_memory(saved, demo, family):
    path = saved(family)
    m = load_pipeline(str(path))
    assert m.model_id == str(path.resolve()) and not m.is_demo and m.note is None
    assert m.family == family and m.resolution == 64 and m.seed_shape == (4, 8, 8)
    assert re.fullmatch(r"[0-9a-f]{16}", m.revision) and m.scheduler == "DDIMScheduler"
    seeds = torch.randn(2, *m.seed_shape, generator=torch.Generator().manual_seed(0))
    from_disk = [im.tobytes() for b in generate_images(m, seeds, "a cat", num_inference_steps=2) for im in b]
    in_memory = [im.tobytes() for b in generate_images(demo(family), seeds, "a cat", num_inference_steps=2) for im in b]
    assert from_disk == in_memory


def test_local_revision_is_deterministic_and_tracks_configs(saved, tmp_path):
    import shutil

    src = saved("sd1")
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    assert local_revision(src) == local_revision(copy)
    cfg = copy / "scheduler" / "scheduler_config.json"
    data = json.loads(cfg.read_text())
    data["steps_offset"] = 0
    cfg.write_text(json.dumps(data))
    assert local_revision(src) != local_revision(copy)


def test_missing_path_is_a_value_error_naming_it(tmp_path):
    missing = tmp_path / "no" / "such-model"
    with pytest.raises(ValueError, match=re.escape(str(missing))) as info:
        load_pipeline(str(missing))
    assert "does not exist" in str(info.value)


def test_dir_without_model_index(tmp_path):
    with pytest.raises(ValueError, match="no model_index.json") as info:
        load_pipeline(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_dir_with_a_non_sd_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}))
    with pytest.raises(ValueError, match="DDPMPipeline") as info:
        load_pipeline(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_dir_with_broken_json(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline",')
    with pytest.raises(ValueError, match="not valid JSON") as info:
        load_pipeline(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_sd_index_with_missing_components(tmp_path):
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    with pytest.raises(ValueError, match="could not be loaded") as info:
        load_pipeline(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_a_file_is_not_a_model(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        load_pipeline(str(f))


def test_hub_id_fails_cleanly_offline():
    import huggingface_hub.constants

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE was not set before huggingface_hub was imported")
    with pytest.raises(ValueError, match="normguide-test/no-such-model"):
        load_pipeline("normguide-test/no-such-model")


def test_device_and_dtype_checks():
    with pytest.raises(ValueError, match="float16"):
        load_pipeline("demo", dtype="float16")
    with pytest.raises(ValueError, match="dtype"):
        load_pipeline("demo", dtype="float64")
    with pytest.raises(ValueError, match="device"):
        load_pipeline("demo", device="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            load_pipeline("demo", device="cuda")
        assert load_pipeline("demo", device="auto").device == torch.device("cpu")


def test_get_pipeline_caches_per_key_and_is_thread_safe():
    clear_pipeline_cache()
    got = [None] * 4
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, get_pipeline("demo:sd2"))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(g is got[0] for g in got)
    assert get_pipeline("demo:sd2", device="cpu", dtype="float32") is got[0]
    assert get_pipeline("demo:sd1") is not got[0]
    clear_pipeline_cache()
    assert get_pipeline("demo:sd2") is not got[0]


@pytest.mark.checkpoint
def test_real_checkpoint_directory(images):
    """A real SD-family checkpoint directory (NORMGUIDE_TEST_CHECKPOINT), 2 steps, on the best device."""
    import os

    path = os.environ.get("NORMGUIDE_TEST_CHECKPOINT")
    if not path:
        pytest.skip("set NORMGUIDE_TEST_CHECKPOINT to a diffusers SD/SDXL pipeline directory")
    m = load_pipeline(path, device="auto")
    assert m.family in ("sd1", "sd2", "sd2-v", "sdxl") and not m.is_demo and m.resolution >= 512
    from normguide.diffusion import invert_images

    res = invert_images(m, images[:1], "a photo", num_inference_steps=2)
    assert res.seeds.shape == (1, *m.seed_shape) and torch.isfinite(res.seeds).all()
    out = next(generate_images(m, res.seeds, "a photo", num_inference_steps=2))
    assert out[0].size == (m.resolution, m.resolution)


def test_loading_shows_no_progress_bars_and_keeps_the_callers_setting(saved, capsys):
    from diffusers.utils import logging as d_logging

    path = saved("sd1")
    d_logging.disable_progress_bar()
    try:
        load_pipeline(str(path))
        assert not d_logging.is_progress_bar_enabled()
    finally:
        d_logging.enable_progress_bar()
    load_pipeline(str(path))
    assert d_logging.is_progress_bar_enabled()
    assert "Loading pipeline components" not in capsys.readouterr().err
