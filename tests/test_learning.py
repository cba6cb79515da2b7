"""The honest proof that personalization works: train the toy person on the shipped toy model and measure.

One experiment (:mod:`lookalike.toyworld.quality`, the same code that writes docs/QUALITY.md) trains
four runs with the demo's settings: naive priors, the audit's refined priors, no prior loss, and
textual inversion (only the identifier's embedding learns).
The thresholds were set before the shipped model was measured and are stated here; the figures
are in docs/QUALITY.md. Where the shipped model misses a threshold, the test is a strict xfail
that names the measured figure: it fails the run the day the model starts to pass, so the mark
is removed rather than forgotten. The experiment is seeded; on this CPU it repeats its figures.
"""

from __future__ import annotations

import pytest

# likeness = toy CLIP-I of the eval prompts' generations against the subject's photos (0..1 cosine).
LIKENESS_GAIN = 0.10  # trained minus base, at least
CLIP_T_DROP = 0.03  # trained may lose at most this much prompt following (CLIP-T) against the base
PRES_MARGIN = 0.01  # PRES without the prior loss exceeds PRES with it by at least this much
LEAK_MARGIN = 0.10  # refined priors: at least 10 points fewer beards plus lost glasses than naive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # one experiment: about 15 minutes (measured 13 min 56 s, 2026-12-07)


def missed(measured: str):
    return pytest.mark.xfail(strict=True, reason=f"the shipped toy model misses this: {measured} (docs/QUALITY.md)")


@pytest.fixture(scope="module")
def quality(tmp_path_factory):
    from lookalike.toyworld.quality import experiment

    return experiment(tmp_path_factory.mktemp("quality"), echo=lambda _: None)


def refined(quality) -> dict:
    return quality["conditions"]["refined"]


def test_training_makes_the_subject_far_more_likely_than_the_base_model(quality):
    run = refined(quality)
    assert run["trained"]["likeness"] >= run["base"]["likeness"] + LIKENESS_GAIN, run


@missed("CLIP-T 0.533 -> 0.493 with refined priors, -0.040 (naive -0.013 and no prior loss -0.022 pass); "
        "the refined priors all look alike (feature spread 0.31 against 0.58), and varied rendered priors with the "
        "subject's beard and glasses lose only 0.005")
def test_prompt_following_stays_near_the_base_model(quality):
    run = refined(quality)
    assert run["trained"]["clip_t"] >= run["base"]["clip_t"] - CLIP_T_DROP, run


def test_textual_inversion_learns_the_subject_and_keeps_prompt_following(quality):
    # The same two thresholds on the embedding-only condition (added 2026-12-03, after a sweep had
    # measured it; the thresholds are the ones above, unchanged): the LoRA's CLIP-T drop is not
    # a property of the eval, since a run that leaves the UNet alone passes the same check. Its
    # learning rate was set again for the seventh toy build, after measuring (quality.PER_CONDITION).
    run = quality["conditions"]["embedding"]
    assert run["trained"]["likeness"] >= run["base"]["likeness"] + LIKENESS_GAIN, run
    assert run["trained"]["clip_t"] >= run["base"]["clip_t"] - CLIP_T_DROP, run


def test_prior_preservation_keeps_the_class_from_turning_into_the_subject(quality):
    with_prior = refined(quality)["trained"]["pres"]
    without = quality["conditions"]["no-prior"]["trained"]["pres"]
    assert without >= with_prior + PRES_MARGIN, (with_prior, without)


def test_the_audit_names_the_subjects_glasses_in_the_refined_prompt(quality):
    assert quality["conditions"]["naive"]["class_prompt"] == "a photo of a man"
    prompt = refined(quality)["class_prompt"]
    assert "glasses" in prompt.split(", ") and "no glasses" not in prompt, prompt


def test_the_audit_names_the_subject_clean_shaven(quality):
    assert "clean-shaven" in refined(quality)["class_prompt"].split(", ")


@missed("bearded + without glasses, paired reading: naive 53% + 8%, refined 45% + 11%, 5 points fewer (no prior loss "
        "23% + 6%); even priors the world renders clean-shaven with glasses leak 56% + 8%, against 55% + 6% for its own "
        "men; only priors that are the subject but his star cut it (22% + 6%), and they keep PRES at the no-prior level")
def test_refined_priors_leak_fewer_beards_and_lost_glasses_than_naive_ones(quality):
    """Read against the subject's own renders through the VAE (lookalike.toyworld.leakage): the probes
    misread the VAE's smeared glasses as a beard on half of his own photos."""
    naive = quality["conditions"]["naive"]["trained"]["leakage"]["paired"]
    leak = lambda r: r["beard"] + r["no_glasses"]  # noqa: E731
    assert leak(refined(quality)["trained"]["leakage"]["paired"]) <= leak(naive) - LEAK_MARGIN, (naive, refined(quality))
