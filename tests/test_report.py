"""The numbers a run reports beyond accuracy: locality, description length, filter maps."""
import math
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


def test_description_length_and_bound():
    # k*b + ||w||_0*log2(k*n) + 2*log2(n) with no weight sharing, k = ||w||_0
    assert report.description_length(1000, 10 ** 6, b=32) == pytest.approx(
        1000 * 32 + 1000 * math.log2(1000 * 10 ** 6) + 2 * math.log2(10 ** 6))
    bits = report.description_length(1000, 10 ** 6)
    assert report.mdl_gap_bound(bits, 10 ** 6, 50000) == pytest.approx(
        math.sqrt((bits + math.log(2 * 10 ** 6 / 0.05)) / 100000))
    assert report.description_length(10, 100) < report.description_length(20, 100)


def test_filters_png(tmp_path):
    maps = np.random.default_rng(0).standard_normal((50, 3, 32, 32))
    maps[:10] = 0  # units with no weights are never drawn
    path = os.path.join(tmp_path, 'filters.png')
    report.save_filters(maps, path)
    image = Image.open(path)
    assert image.size == (10 * 98, 3 * 98)  # 30 tiles of 96 px and 2 px gaps
    assert image.mode == 'RGB'


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
