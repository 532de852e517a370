"""The crop spec: its pure geometry, its travel from prepare through the checkpoint to the kernel."""
import json

import numpy as np
import pytest
import torch

from kernels.ensemble import Ensemble
from kernels.pipeline import Cutting, detect_video
from preprocessing.cropspec import INTERPOLATIONS, RESIZE_RULES, CropSpec, CropSpecError, read_crop_entry
from preprocessing.geometry import fitted_size, truncated_box
from models.checkpoint import load_model, read_checkpoint, save_checkpoint
from models.zoo import default_spec, to_batch

CLIP = "ffpp/original_sequences/youtube/c40/videos/183.mp4"


@pytest.mark.parametrize("box, frame, expected", [
    ((100.9, 50.2, 160.7, 131.9), (1920, 1080), (80, 23, 180, 158)),  # int corners 100,50,160,131: pads 60//3, 81//3
    ((-7.8, 10.0, 52.0, 70.0), (1920, 1080), (-7 - 19, 10 - 20, 52 + 19, 90)),  # truncated toward zero
    ((1900.0, 1000.0, 1990.0, 1090.0), (1920, 1080), (1870, 970, 1920, 1080)),  # clipped to the frame
])
def test_truncated_box_is_the_winners_integer_crop(box, frame, expected):
    x1, y1, x2, y2 = expected
    assert truncated_box(box, (1 / 3, 1 / 3), *frame) == (max(x1, 0), max(y1, 0), min(x2, frame[0]), min(y2, frame[1]))


def test_whole_pads_are_not_lost_to_float_rounding():
    for side in range(3, 3000, 3):  # (1/3 as a float) * 3k is k
        assert truncated_box((0, 0, side, side), (1 / 3, 1 / 3), 10**5, 10**5)[2] == side + side // 3
    assert 0.57 * 100 < 57  # ... but 0.57 * 100 is 56.99999999999999: its pad is still 57
    assert truncated_box((0, 0, 100, 100), (0.57, 0.57), 1000, 1000) == (0, 0, 157, 157)


@pytest.mark.parametrize("shape, size, truncate, expected", [
    ((300, 200), (380, 380), False, (253, 380)),  # 200 * 380 / 300 = 253.33
    ((301, 299), (380, 380), True, (377, 380)),  # 299 * (380 / 301) = 377.47: int, not round
    ((301, 299), (380, 380), False, (377, 380)),
    ((100, 203), (380, 380), True, (380, 187)),  # 100 * (380 / 203) = 187.19
    ((100, 100), (200, 100), False, (100, 100)),  # non-square target: the height touches
])
def test_fitted_size(shape, size, truncate, expected):
    assert fitted_size(*shape, size, truncate) == expected


def test_fitting_an_input_again_leaves_it_unchanged():
    """The detection workers send crops already fitted to each model's input, and the models fit
    what they get: a second fit must be the identity, for every resize rule and interpolation."""
    rng = np.random.default_rng(0)
    for resize in RESIZE_RULES:
        for box_rule in ("outward", "truncate"):
            for shrink in INTERPOLATIONS:
                for enlarge in INTERPOLATIONS:
                    spec = CropSpec(size=(128, 96), resize=resize, box_rule=box_rule, shrink=shrink, enlarge=enlarge)
                    for shape in ((510, 414, 3), (61, 83, 3)):
                        once = spec.fit(rng.integers(0, 256, shape, dtype=np.uint8))
                        assert once.shape == (96, 128, 3)
                        np.testing.assert_array_equal(spec.fit(once), once)


def test_the_spec_round_trips_and_refuses_unknown_or_impossible_values():
    spec = CropSpec((380, 300), margin=(0.25, 1 / 3), box_rule="truncate", shrink="linear", aggregate="mean")
    assert CropSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(CropSpecError, match=r"unknown key\(s\) \['marign'\]"):
        CropSpec.from_dict({"size": [64, 64], "marign": 0.3})
    with pytest.raises(CropSpecError, match="box_rule 'round' is not one of"):
        CropSpec((64, 64), box_rule="round")
    assert spec.replace(margin=None, aggregate="confident") == CropSpec(
        (380, 300), margin=(0.25, 1 / 3), box_rule="truncate", shrink="linear")


def test_a_prepared_folder_names_its_crops(tmp_path):
    assert read_crop_entry(tmp_path) == {}
    (tmp_path / "config.json").write_text(json.dumps({"margin": 0.25}))  # prepared before the spec existed
    assert CropSpec((8, 8), **read_crop_entry(tmp_path)).margin == (0.25, 0.25)
    (tmp_path / "config.json").write_text(json.dumps({"margin": 0.25, "crop_spec": {"margin": [0.2, 0.4]}}))
    assert CropSpec((8, 8), **read_crop_entry(tmp_path)).margin == (0.2, 0.4)


def test_an_old_checkpoint_without_a_spec_loads_with_the_defaults(checkpoint, tmp_path):
    payload = read_checkpoint(checkpoint)
    assert payload["crop_spec"] == default_spec(load_model(checkpoint).config).to_dict()
    del payload["crop_spec"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    model = load_model(old)
    assert model.spec == CropSpec((64, 64), margin=0.3, box_rule="outward", resize="pad")
    crops = [np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)]
    assert torch.equal(to_batch(crops, model.spec), to_batch(crops, model.config))


@pytest.fixture(scope="module")
def two_margins(checkpoint, tmp_path_factory):
    """The fixture model saved twice: with margin 0.3 and with one third (same weights)."""
    paths = []
    for name, margin in (("m30", 0.3), ("third", 1 / 3)):
        model = load_model(checkpoint)
        model.spec = model.spec.replace(margin=(margin, margin))
        paths.append(tmp_path_factory.mktemp(name) / f"{name}.pt")
        save_checkpoint(paths[-1], model)
    return paths


def test_each_checkpoint_s_margin_reaches_its_crops(two_margins, detector, data_dir):
    """One detection, two checkpoints that differ only by their margin: each model reads crops cut
    with its own margin, so their scores differ; the same margin forced on both makes them equal."""
    ensemble = Ensemble.load(two_margins, precision="fp32")
    assert [s.margin for s in ensemble.crop_specs] == [(0.3, 0.3), (1 / 3, 1 / 3)]
    faces = detect_video("183.mp4", data_dir / CLIP, 2, detector, Cutting(ensemble.crop_specs))
    narrow, wide = (faces.cuts[s.input_key] for s in ensemble.crop_specs)
    width, height = ensemble.crop_specs[0].size  # what crosses from a worker: the models' inputs
    assert len(narrow) == len(wide) == 2 and all(n.shape == w.shape == (height, width, 3) for n, w in zip(narrow, wide))
    assert all(not np.array_equal(n, w) for n, w in zip(narrow, wide))
    cut_narrow, cut_wide = (detect_video("183.mp4", data_dir / CLIP, 2, detector, Cutting((s,), keep_crops=True)).crops
                            for s in ensemble.crop_specs)  # as cut, at the video's resolution
    assert all(w.shape[0] > n.shape[0] > height for n, w in zip(cut_narrow, cut_wide))
    for spec, cut, fitted in zip(ensemble.crop_specs, (cut_narrow, cut_wide), (narrow, wide)):
        for crop, expected in zip(cut, fitted):
            np.testing.assert_array_equal(spec.fit(crop), expected)
    probs = ensemble.predict(faces.cuts)
    for name, crops in (("m30", narrow), ("third", wide)):
        model = ensemble.models[ensemble.names.index(name)]
        with torch.no_grad():
            expected = torch.sigmoid(model(to_batch(crops, model.spec)))
        np.testing.assert_allclose(probs[name], expected.numpy(), atol=1e-6)
    assert np.abs(probs["m30"] - probs["third"]).max() > 1e-3
    forced = Ensemble.load(two_margins, precision="fp32", spec={"margin": 0.3})
    assert len(forced.crop_specs) == 1
    same = forced.predict(detect_video("183.mp4", data_dir / CLIP, 2, detector, Cutting(forced.crop_specs)).cuts)
    np.testing.assert_allclose(same["m30"], same["third"], atol=1e-6)
