"""The DreamBooth paper's metrics as small pure functions over feature tensors.

Every function takes rows of features (one row per image or text) from any extractor in
:mod:`lookalike.metrics.features` or :mod:`lookalike.metrics.faces` and returns a float.
Similarities are raw cosines (not rescaled to 0-100), averaged over all generated × real pairs,
as in the paper (Ruiz et al. 2023, section 4.1).

Face features may hold NaN rows: the face extractor's way of saying "no face found".
"""

from __future__ import annotations

import torch

from lookalike.errors import LookalikeError


def _rows(feats: torch.Tensor, what: str) -> torch.Tensor:
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise LookalikeError(f"{what}: need at least one feature row, got shape {tuple(feats.shape)}")
    return feats.float()


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, D] × [M, D] -> [N, M] cosine similarities."""
    a = torch.nn.functional.normalize(_rows(a, "cosine_matrix"), dim=-1)
    b = torch.nn.functional.normalize(_rows(b, "cosine_matrix"), dim=-1)
    if a.shape[1] != b.shape[1]:
        raise LookalikeError(f"features of different sizes ({a.shape[1]} vs {b.shape[1]}): use one extractor for both sets")
    return a @ b.T


def likeness_per_image(gen_feats: torch.Tensor, real_feats: torch.Tensor) -> torch.Tensor:
    """[N] mean cosine of each generated image to all real photos: ranks best-of-N samples."""
    return cosine_matrix(gen_feats, real_feats).mean(dim=1)


def clip_i(gen_feats: torch.Tensor, real_feats: torch.Tensor) -> float:
    """CLIP-I: mean CLIP image-embedding cosine over all generated × real pairs."""
    return float(cosine_matrix(gen_feats, real_feats).mean())


def dino(gen_feats: torch.Tensor, real_feats: torch.Tensor) -> float:
    """DINO: mean DINO ViT CLS-token cosine over all generated × real pairs.

    Same arithmetic as CLIP-I; DINO features are not trained to ignore identity-defining
    detail across a class, so this score separates the subject from others of its class better.
    """
    return float(cosine_matrix(gen_feats, real_feats).mean())


def clip_t(image_feats: torch.Tensor, text_feats: torch.Tensor) -> float:
    """CLIP-T: mean cosine of each image to the embedding of its own prompt (rows paired)."""
    image_feats, text_feats = _rows(image_feats, "clip_t images"), _rows(text_feats, "clip_t prompts")
    if image_feats.shape[0] != text_feats.shape[0]:
        raise LookalikeError(
            f"clip_t pairs each image with its prompt: got {image_feats.shape[0]} images and {text_feats.shape[0]} prompts"
        )
    cos = torch.nn.functional.cosine_similarity(image_feats, text_feats, dim=-1)
    return float(cos.mean())


def pres(class_gen_feats: torch.Tensor, subject_feats: torch.Tensor) -> float:
    """PRES (prior preservation): DINO similarity of plain "a [class]" generations to the subject.

    High PRES means the model paints the subject whenever it is asked for any member of the class
    (language drift); lower is better.
    """
    return float(cosine_matrix(class_gen_feats, subject_feats).mean())


def div_feat(feats: torch.Tensor) -> float:
    """DIV-feat: mean pairwise feature distance (1 − cosine) among samples of one prompt.

    The paper's DIV uses LPIPS, whose backbones cannot be obtained offline; this is the same idea
    over whichever features are given (DINO by default), so its values are not LPIPS values.
    """
    feats = _rows(feats, "div_feat")
    n = feats.shape[0]
    if n < 2:
        raise LookalikeError("div_feat needs at least two samples of the prompt")
    cos = cosine_matrix(feats, feats)
    upper = torch.triu_indices(n, n, offset=1)
    return float((1.0 - cos[upper[0], upper[1]]).mean())


def face_found(face_feats: torch.Tensor) -> torch.Tensor:
    """[N] bool: which rows of face features hold a face (NaN rows mean none was found)."""
    return ~torch.isnan(face_feats).any(dim=1)


def face_similarity_per_image(gen_faces: torch.Tensor, real_faces: torch.Tensor) -> torch.Tensor:
    """[N] mean SFace cosine of each generated face to the subject's faces; 0 where no face was found.

    Zero is where unrelated people land (SFace gives about -0.2 to 0.15 for other people), so an
    image without the subject's face counts as not showing the subject.
    """
    real = _rows(real_faces, "face_similarity photos")[face_found(real_faces)]
    if real.shape[0] == 0:
        raise LookalikeError("no face was found in any subject photo: face similarity needs photos showing the face")
    gen = _rows(gen_faces, "face_similarity samples")
    found = face_found(gen)
    scores = torch.zeros(gen.shape[0])
    if found.any():
        scores[found] = cosine_matrix(gen[found], real).mean(dim=1)
    return scores


def face_similarity(gen_faces: torch.Tensor, real_faces: torch.Tensor) -> float:
    """Mean face-identity cosine of generated images to the subject's photos (no face counts 0)."""
    return float(face_similarity_per_image(gen_faces, real_faces).mean())
