"""Feature extractors: tiny random CLIP / ViT folders loaded by path, real photos for faces and DINO."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from skimage import data

from lookalike import toyworld
from lookalike.errors import LookalikeError
from lookalike.metrics import features
from lookalike.metrics.faces import FaceEmbedder
from lookalike.metrics.scores import cosine_matrix, face_found


def save_tiny_clip(folder, image_size=32, projection_dim=16):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from lookalike.models.tiny import sd_clip_tokenizer

    torch.manual_seed(0)
    layers = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    config = CLIPConfig(
        text_config=dict(layers, vocab_size=49408, max_position_embeddings=77),
        vision_config=dict(layers, image_size=image_size, patch_size=8),
        projection_dim=projection_dim,
    )
    CLIPModel(config).save_pretrained(folder)
    sd_clip_tokenizer().save_pretrained(folder)
    size = {"shortest_edge": image_size}
    CLIPImageProcessor(size=size, crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def save_tiny_vit(folder, image_size=224):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=image_size, patch_size=32
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def photos():
    return [Image.fromarray(data.astronaut()), Image.fromarray(data.coffee()), Image.fromarray(data.chelsea())]


def test_clip_embeds_images_and_texts_by_path(tiny_clip, photos):
    clip = features.ClipEmbedder(str(tiny_clip), batch_size=2)
    feats = clip.embed_images(photos + [photos[0]])
    assert feats.shape == (4, 16)
    assert torch.allclose(feats[0], feats[3], atol=1e-5)  # same image, other batch
    assert not torch.allclose(feats[0], feats[1], atol=1e-3)
    texts = clip.embed_texts(["a photo of a man", "a photo of a man with a very long and detailed beard"])
    assert texts.shape == (2, 16)
    alone = clip.embed_texts(["a photo of a man"])
    # padding to the longer prompt must not change the shorter prompt's features
    assert torch.allclose(alone[0], texts[0], atol=1e-5)


def test_clip_folder_without_preprocessor_config_still_loads(tmp_path, photos):
    folder = save_tiny_clip(tmp_path / "clip", image_size=24)
    (folder / "preprocessor_config.json").unlink()
    assert features.ClipEmbedder(str(folder)).embed_images(photos[:1]).shape == (1, 16)


def test_toy_clip_is_loaded_as_a_clip_folder_or_explained(tiny_clip, monkeypatch, tmp_path):
    monkeypatch.setattr(toyworld, "ASSETS", tmp_path)  # an install without the weights
    with pytest.raises(LookalikeError, match="toy model's weights are missing from this install"):
        features.open_clip("toy")
    monkeypatch.setattr(toyworld, "clip_dir", lambda: tiny_clip, raising=False)
    assert features.open_clip("toy").source == str(tiny_clip)


@pytest.mark.parametrize("source", ["missing-folder", "openai/clip-vit-base-patch32"])
def test_clip_that_cannot_be_loaded_gives_one_line(tmp_path, source):
    with pytest.raises(LookalikeError, match="could not load the CLIP model") as err:
        features.ClipEmbedder(str(tmp_path / source) if source == "missing-folder" else source)
    assert "\n" not in str(err.value)


def test_dino_preprocessing_matches_hand_computation():
    photo = Image.fromarray(data.coffee())  # 600 × 400: the shorter side (height) goes to 256
    out = features.dino_preprocess(photo)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    resized = np.asarray(photo.resize((384, 256), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    crop = resized[16:240, 80:304]  # top = (256 - 224) / 2, left = (384 - 224) / 2
    for c, (mean, std) in enumerate([(0.485, 0.229), (0.456, 0.224), (0.406, 0.225)]):
        np.testing.assert_allclose(out[c], (crop[:, :, c] - mean) / std, atol=1e-5)


def test_dino_cls_features(tmp_path, photos):
    dino = features.DinoEmbedder(str(save_tiny_vit(tmp_path / "vit")))
    feats = dino.embed_images(photos + [photos[0].resize((300, 300))])
    assert feats.shape == (4, 32)
    assert not torch.allclose(feats[0], feats[1], atol=1e-3)
    # a ViT trained at another size reads the 224 px crop through interpolated position embeddings
    other = features.DinoEmbedder(str(save_tiny_vit(tmp_path / "vit64", image_size=64)))
    assert other.embed_images(photos[:1]).shape == (1, 32)


def test_face_identity_separates_the_same_face_from_other_people():
    faces = FaceEmbedder()
    astronaut = Image.fromarray(data.astronaut())
    lfw = data.lfw_subset()[:100]  # the first 100 are faces (25 × 25, grey)
    others = [Image.fromarray((face * 255).astype(np.uint8)).resize((100, 100)) for face in lfw[::10]]
    feats = faces.embed_images([astronaut, ImageOps.mirror(astronaut), *others])
    found = face_found(feats)
    assert found[:2].all() and found[2:].sum() >= 5
    similarity = cosine_matrix(feats[:1], feats[found])[0]
    assert similarity[1] > 0.8  # the mirrored astronaut
    assert similarity[2:].max() < 0.5  # everyone else


def test_image_without_face_is_reported_not_raised():
    faces = FaceEmbedder()
    cat = Image.fromarray(data.chelsea())
    assert faces.embed_face(cat) is None
    feats = faces.embed_images([cat, Image.new("RGB", (64, 64))])
    assert feats.shape == (2, 128) and not face_found(feats).any()
