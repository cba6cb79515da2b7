"""The paper's metrics on hand-built feature rows whose cosines are worked out by hand."""

import math

import pytest
import torch

from lookalike.errors import LookalikeError
from lookalike.metrics import scores

R2 = 1 / math.sqrt(2)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_clip_i_and_dino_average_all_generated_by_real_pairs():
    gen, real = t([[1, 0], [0, 1]]), t([[1, 0], [1, 1]])
    # cosines: [[1, 1/√2], [0, 1/√2]]
    expected = (1 + R2 + 0 + R2) / 4
    assert scores.clip_i(gen, real) == pytest.approx(expected, abs=1e-6)
    assert scores.dino(gen, real) == pytest.approx(expected, abs=1e-6)
    assert scores.likeness_per_image(gen, real).tolist() == pytest.approx([(1 + R2) / 2, R2 / 2], abs=1e-6)


def test_similarity_ignores_feature_scale():
    gen, real = t([[1, 0], [0, 1]]), t([[1, 0], [1, 1]])
    assert scores.clip_i(5 * gen, 0.1 * real) == pytest.approx(scores.clip_i(gen, real), abs=1e-6)


def test_clip_t_pairs_each_image_with_its_own_prompt():
    images, texts = t([[1, 0], [3, 4]]), t([[1, 0], [4, 3]])
    # cosines 1 and 24/25; the cross pairs (0.6, 0.8) must not count
    assert scores.clip_t(images, texts) == pytest.approx((1 + 0.96) / 2, abs=1e-6)


def test_pres_is_similarity_of_class_samples_to_subject():
    class_samples, subject = t([[0, 1], [1, 1]]), t([[0, 2]])
    assert scores.pres(class_samples, subject) == pytest.approx((1 + R2) / 2, abs=1e-6)


def test_div_feat_is_mean_pairwise_cosine_distance():
    feats = t([[1, 0], [0, 1], [1, 1]])
    # pairs: (1 - 0), (1 - 1/√2), (1 - 1/√2)
    assert scores.div_feat(feats) == pytest.approx((1 + 2 * (1 - R2)) / 3, abs=1e-6)
    assert scores.div_feat(t([[1, 2], [2, 4]])) == pytest.approx(0.0, abs=1e-6)


def test_face_similarity_counts_missing_faces_as_zero_and_skips_faceless_photos():
    nan = float("nan")
    gen = t([[1, 0], [nan, nan]])
    real = t([[1, 0], [nan, nan], [0, 1]])
    assert scores.face_found(real).tolist() == [True, False, True]
    assert scores.face_similarity_per_image(gen, real).tolist() == pytest.approx([0.5, 0.0])
    assert scores.face_similarity(gen, real) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: scores.clip_i(torch.empty(0, 4), torch.ones(2, 4)), "at least one feature row"),
        (lambda: scores.dino(torch.ones(2, 4), torch.ones(2, 3)), "one extractor for both"),
        (lambda: scores.clip_t(torch.ones(2, 4), torch.ones(3, 4)), "2 images and 3 prompts"),
        (lambda: scores.div_feat(torch.ones(1, 4)), "at least two samples"),
        (lambda: scores.face_similarity(torch.ones(1, 2), torch.full((2, 2), float("nan"))), "no face was found"),
    ],
)
def test_bad_inputs_raise_a_one_line_error(call, message):
    with pytest.raises(LookalikeError, match=message):
        call()
