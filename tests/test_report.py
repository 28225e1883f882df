"""The numbers a run reports beyond accuracy: locality, description length, filter maps."""
import os

import numpy as np
import pytest
from PIL import Image

import models
import report


def test_locality_of_a_dense_random_layer_is_about_a_tenth():
    maps = np.random.default_rng(0).standard_normal((200, 3, 32, 32))
    assert 0.08 < report.locality_score(maps) < 0.13  # 81/1024 of the mass, plus the best window's luck


def test_locality_of_s_local_is_one():
    model = models.build('s_local', 2)
    maps = report.first_layer_maps(model, 32, 3)
    assert maps.shape == (256 * 2, 3, 32, 32)
    assert report.locality_score(maps) == pytest.approx(1.0)


def test_locality_counts_only_units_with_enough_weights():
    maps = np.zeros((2, 3, 32, 32))
    maps[0, :, :3, :3] = 1  # 27 non-zeros in one corner: local
    maps[1, 0, 20:22, 20:29] = 1  # 18 non-zeros: ignored
    maps[1, 0, 0, 0] = 1  # 19, one far away: still ignored
    assert report.locality_score(maps) == pytest.approx(1.0)
    maps[1, 0, 22, 20] = 1  # now 20, of which the far corner holds 1/20 of the mass
    assert report.locality_score(maps) == pytest.approx((1.0 + 19 / 20) / 2)
    assert report.locality_score(np.zeros((4, 3, 32, 32))) is None
    assert report.locality_score(np.ones((4, 3, 9, 9))) is None  # conv kernels: local by construction


def test_shuffled_locality_is_what_sparsity_alone_scores():
    maps = np.zeros((300, 3, 32, 32))
    maps[:, :, 10:13, 10:13] = 1  # 27 weights, all in one 3x3 patch: local
    assert report.locality_score(maps) == pytest.approx(1.0)
    shuffled = report.shuffled_locality(maps)
    assert 0.2 < shuffled < 0.4  # 27 weights at random on 32x32x3: the best 9x9 window holds a few
    assert report.shuffled_locality(maps, seed=1) == pytest.approx(shuffled, abs=0.03)
    dense = np.random.default_rng(0).standard_normal((100, 3, 32, 32))
    assert report.shuffled_locality(dense) == pytest.approx(report.locality_score(dense), abs=0.01)


def test_inverse_participation_ratio_by_hand():
    maps = np.zeros((3, 3, 32, 32))
    maps[0, 0, :5, :5] = 2.0  # 25 equal weights: 1/25
    maps[1, :, 10, :10] = np.arange(1, 11)  # 30 weights 1..10 in each channel: sum w^4 / (sum w^2)^2
    maps[2, 0, 0, :19] = 1  # 19 weights: ignored
    w = np.tile(np.arange(1, 11.0), 3)
    assert report.inverse_participation_ratio(maps) == pytest.approx((1 / 25 + (w ** 4).sum() / (w ** 2).sum() ** 2) / 2)
    dense = np.random.default_rng(0).standard_normal((100, 3, 32, 32))
    assert report.inverse_participation_ratio(dense) == pytest.approx(3 / 3072, rel=0.1)
    assert report.inverse_participation_ratio(np.zeros((2, 3, 32, 32))) is None


def test_s_local_maps_put_each_filter_where_it_looks():
    model = models.build('s_local', 1)
    layer = model.layers[1]
    layer.W[:] = 0
    layer.W[17, :, 0] = 1  # position 17 = row 1, column 1 of the 16x16 output grid
    maps = report.first_layer_maps(model, 32, 3)
    nonzero = np.argwhere(maps[17].sum(0) != 0)
    # output (1, 1) with stride 2 and pad 4 sees input rows and columns -2..6, clipped to 0..6
    assert nonzero.min(0).tolist() == [0, 0] and nonzero.max(0).tolist() == [6, 6]
    assert np.count_nonzero(maps) == 3 * 7 * 7


def test_conv_maps_put_each_weight_on_its_channel_row_and_column():
    model = models.build('s_conv', 2)
    layer = model.layers[1]
    layer.W[:] = 0
    layer.W[(2 * 9 + 5) * 3 + 1, 1] = 1  # filter 1, kernel row 2, column 5, channel 1
    maps = report.first_layer_maps(model, 32, 3)
    assert maps.shape == (2, 3, 9, 9)
    assert np.argwhere(maps).tolist() == [[1, 1, 2, 5]]


def test_fc_maps_are_the_columns_of_W():
    model = models.build('s_fc', 1)
    W = model.layers[1].W
    maps = report.first_layer_maps(model, 32, 3)
    assert np.array_equal(maps[5].reshape(-1), W[:, 5])  # inputs flattened as (C, H, W)


def test_description_length_and_bound_on_a_worked_example():
    """Theorem 2 worked by hand: n = 1024 parameters, 16 of them non-zero, b = 32 bits, no weight
    sharing (k = 16). kb = 512 bits; |d(g)| <= ||w||_0 log2(kn) + 2 log2(n) = 16 * 14 + 2 * 10
    = 244 bits; in all 756. With m = 50 samples and delta = 0.05 the gap is at most
    sqrt((756 + ln(2 * 1024 / 0.05)) / 100) = sqrt((756 + 10.6203) / 100) = 2.7688."""
    assert report.description_length(16, 1024, b=32) == 756
    assert report.mdl_gap_bound(756, 1024, 50) == pytest.approx(2.7688, abs=1e-4)
    assert report.description_length(0, 1024) == 32 + 2 * 10  # no non-zero weight: k counts as 1


def test_filters_png_tiles_are_grey_where_a_unit_is_zero(tmp_path):
    """Each tile is a unit's weights, 3 pixels a weight: grey (128) where the weight is zero,
    brighter or darker where it is positive or negative."""
    maps = np.zeros((30, 3, 32, 32))
    maps[:, 0, 4:8, 10:14] = 1.0  # red up in a 4x4 patch of every unit
    maps[:, 2, 20, 30] = -1.0  # blue down at one pixel
    path = os.path.join(tmp_path, 'filters.png')
    report.save_filters(maps, path, min_nonzero=1)
    assert Image.open(path).size == (10 * 98, 3 * 98)  # 30 tiles of 96 px and 2 px gaps
    tile = np.asarray(Image.open(path))[:96, :96].astype(int)  # the first tile
    assert (tile[12:24, 30:42] == [255, 128, 128]).all()  # the patch: red at its maximum
    assert (tile[60:63, 90:93] == [128, 128, 1]).all()  # the negative weight
    rest = np.ones((96, 96), bool)
    rest[12:24, 30:42] = rest[60:63, 90:93] = False
    assert (tile[rest] == 128).all()  # everything else: zero, grey


def test_kernel_rings_find_where_a_kernel_keeps_its_weights():
    model = models.build('resnet18', 2, kernel_size=5)
    stem = model.layers[1]
    W = stem.W.reshape(5, 5, 3, -1)
    W[...] = 0
    W[2, 2] = 1.0  # the centre only
    W[0, 4, 0] = 1.0  # one weight of the 16 in the rim ring, in one of 3 channels
    rings = report.kernel_rings(model)
    assert rings['1.W'] == [1.0, 0.0, 1 / (16 * 3)]
    assert '4.branch.0.W' in rings and '6.shortcut.0.W' not in rings  # 1x1 shortcuts have no rings


def test_the_locality_window_is_nine_by_nine():
    """A unit with 81 weights of 1 in a 9x9 square and one weight of 9 diagonally next to it:
    the best 9x9 window holds 81 of 90, so the score is 0.9 (a 10x10 window would give 1.0,
    an 8x8 one 64 / 90)."""
    maps = np.zeros((1, 3, 32, 32))
    maps[0, 0, 5:14, 7:16] = 1.0
    maps[0, 1, 14, 16] = -9.0  # |w| summed over channels: the sign and the channel do not matter
    assert report.locality_score(maps) == pytest.approx(0.9)
