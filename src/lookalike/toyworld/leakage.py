"""Reading beard and glasses leakage on generations of the toy person, against the subject itself.

The zero-shot probes ("a photo of a man, with a beard" against "..., clean-shaven") misread the
toy model's pictures of this subject: passed through the toy VAE and back, half of the subject's
own clean-shaven photos read as bearded, because the VAE smears his black glasses into a dark
lower face. A paired reading asks a narrower question that the toy world can answer exactly: does
a generation look more like the subject with a beard, or like the subject as he is, when the
same VAE has drawn both? The references are renders of the subject's look (new layouts and
contexts, photo style) in three versions: as he is, with a beard, without glasses; each passed
through the VAE, embedded by the judge and averaged. A generation counts as bearded when it is
nearer (cosine) to the bearded centroid than to the as-is one, and likewise for glasses.

:meth:`PairedReader.check` reads held-out renders of the three versions, so every figure the
reader gives comes with how often it is right on pictures whose answer is known.
"""

from __future__ import annotations

import numpy as np
import torch

from lookalike.toyworld.render import render
from lookalike.toyworld.subjects import LOOKS
from lookalike.toyworld.world import CONTEXTS

# The changes a reference differs from the subject in, by the leakage figure it reads.
CHANGES = {"beard": {"beard": "yes"}, "no_glasses": {"glasses": "no"}}
REFERENCES = 36  # renders per version: six of each of the world's six contexts
REFERENCE_SEED, HELD_OUT_SEED = 11, 12


def look_scenes(subject: str, count: int, seed: int) -> list[dict]:
    """``count`` photo-style scenes of the subject's look, cycling through the world's contexts."""
    rng = np.random.default_rng([seed, 5])
    contexts = list(CONTEXTS)
    return [
        {**LOOKS[subject], "context": contexts[i % len(contexts)], "style": "photo", "seed": 950_000 + 1000 * seed + i,
         "scale": float(rng.uniform(0.8, 1.1)), "dx": float(rng.uniform(-0.12, 0.12)), "dy": float(rng.uniform(-0.06, 0.06))}
        for i in range(count)
    ]


@torch.no_grad()
def vae_round_trip(vae, images: list[np.ndarray]) -> list[np.ndarray]:
    """The images as the VAE draws them: encoded (latent mean), decoded, back to uint8 RGB."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().to(vae.device, vae.dtype) / 127.5 - 1
    y = vae.decode(vae.encode(x).latent_dist.mean).sample.float().clamp(-1, 1)
    return list(((y.permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy())


class PairedReader:
    """Beard / lost-glasses shares of generations of ``subject``, read against the subject's own renders."""

    def __init__(self, judge, vae, subject: str = "toyperson", count: int = REFERENCES):
        self.judge, self.vae, self.subject, self.count = judge, vae, subject, count
        scenes = look_scenes(subject, count, REFERENCE_SEED)
        self.as_is = self._centroid(scenes, {})
        self.changed = {name: self._centroid(scenes, change) for name, change in CHANGES.items()}

    @torch.no_grad()
    def _features(self, scenes: list[dict], change: dict) -> torch.Tensor:
        return self.judge.image_features(vae_round_trip(self.vae, [render({**s, **change}) for s in scenes]))

    def _centroid(self, scenes: list[dict], change: dict) -> torch.Tensor:
        return self._features(scenes, change).mean(dim=0)

    @torch.no_grad()
    def read_features(self, feats: torch.Tensor) -> dict[str, float]:
        near_as_is = feats @ self.as_is
        return {name: round(float((feats @ c > near_as_is).float().mean()), 3) for name, c in self.changed.items()}

    def read(self, images: list[np.ndarray]) -> dict[str, float]:
        """Share of ``images`` nearer the bearded subject, and nearer the subject without glasses."""
        with torch.no_grad():
            return self.read_features(self.judge.image_features(images))

    def check(self) -> dict[str, dict[str, float]]:
        """The reader on held-out renders (other layouts) whose answer is known, each through the VAE.

        ``as is`` should read 0 / 0, ``beard`` 1 on beard, ``no_glasses`` 1 on no_glasses."""
        scenes = look_scenes(self.subject, self.count, HELD_OUT_SEED)
        versions = {"as is": {}, **CHANGES}
        return {name: self.read_features(self._features(scenes, change)) for name, change in versions.items()}
