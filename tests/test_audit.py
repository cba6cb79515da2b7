"""The prior audit: probe statistics and prompt refinement on given probe results, image flags on
real files, and the verb end to end with a tiny random CLIP (files written, flags, errors)."""

import html
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_features import save_tiny_clip

from lookalike.cli import main
from lookalike.errors import LookalikeError
from lookalike.prior import probes
from lookalike.prior.audit import SubjectAudit, apply_refined_prompts, audit_run, not_followed, since_previous
from lookalike.prior.audit_report import not_followed_hint
from lookalike.prior.checks import open_set
from lookalike.run import Run, append_jsonl, read_jsonl

BEARD = probes.Attribute("beard", ("with a beard", "clean-shaven"))
GLASSES = probes.Attribute("glasses", ("wearing glasses", "without glasses"))
HAT = probes.Attribute("hat", ("wearing a hat", "bare-headed"))


def choices(*counts):
    """An array of option indices: counts[i] images chose option i."""
    return np.repeat(np.arange(len(counts)), counts)


# ---------------------------------------------------------------- attributes and statistics


def test_bundled_attributes_and_user_file_merged_over_them(tmp_path):
    person = {a.name: a.options for a in probes.load_attributes("person")}
    assert person["beard"] == ("with a beard", "clean-shaven") and "glasses" in person and "hair_colour" in person
    assert "fur_colour" in {a.name for a in probes.load_attributes("pet")}
    extra = tmp_path / "mine.toml"
    extra.write_text('[person]\nbeard = ["bearded", "shaved"]\ntattoo = ["with tattoos", "without tattoos"]\n')
    merged = {a.name: a.options for a in probes.load_attributes("person", extra)}
    assert merged["beard"] == ("bearded", "shaved") and "tattoo" in merged and "glasses" in merged


def test_toy_model_uses_the_toy_worlds_own_probe_words():
    toy = {a.name: a.options for a in probes.load_attributes("person", toy=True)}
    assert toy["beard"] == ("beard", "clean-shaven") and toy["glasses"] == ("glasses", "no glasses")
    assert "fur" in {a.name for a in probes.load_attributes("pet", toy=True)}


@pytest.mark.parametrize(
    "text, message",
    [(None, "not found"), ("[person\n", "not valid TOML"), ('[person]\nbeard = ["only one"]\n', "person.beard needs")],
)
def test_bad_attribute_file_is_explained(tmp_path, text, message):
    path = tmp_path / "attrs.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(LookalikeError, match=message):
        probes.load_attributes("person", path)


def test_finding_reports_the_skew_with_numbers():
    beard = probes.compare(BEARD, choices(108, 92), choices(0, 6), threshold=0.25)
    assert beard.prior_counts == [108, 92] and beard.subject_counts == [0, 6]
    assert beard.differs and beard.gap == pytest.approx(0.54)
    assert beard.subject_option == "clean-shaven"
    assert beard.line() == 'beard: 54% of 200 priors show "with a beard"; 0 of 6 photos do'
    hat = probes.compare(HAT, choices(10, 190), choices(0, 6), threshold=0.25)
    assert not hat.differs  # 5 points apart


def test_a_second_audit_says_whether_the_new_priors_moved_towards_the_photos():
    previous = {"attributes": [probes.compare(a, choices(*p), choices(*q), 0.25).to_json() for a, p, q in [
        (BEARD, (28, 72), (0, 6)), (GLASSES, (40, 60), (6, 0)), (HAT, (5, 95), (0, 6))]]}
    now = [probes.compare(BEARD, choices(53, 47), choices(0, 6), 0.25),  # the refined prompt drew more beards
           probes.compare(GLASSES, choices(80, 20), choices(6, 0), 0.25),
           probes.compare(HAT, choices(7, 93), choices(0, 6), 0.25)]  # differed in neither audit: left out
    assert since_previous(previous, now) == [
        'beard: "clean-shaven" in 72% -> 47% of priors (6 of 6 photos): further from them',
        'glasses: "wearing glasses" in 40% -> 80% of priors (6 of 6 photos): closer to the photos',
    ]
    level = [probes.compare(BEARD, choices(30, 70), choices(0, 6), 0.25)]
    assert since_previous(previous, level) == ['beard: "clean-shaven" in 72% -> 70% of priors (6 of 6 photos): no better']
    assert since_previous({}, now) == []  # a report from before attributes were recorded
    assert not_followed(previous, now) == ["beard"]  # glasses moved closer; the beard still differs, and went further
    assert not_followed(previous, level) == ["beard"]  # no better, still 70 points apart
    agrees = [probes.compare(BEARD, choices(5, 95), choices(0, 6), 0.25)]
    assert not_followed(previous, agrees) == []  # closer, and within the threshold now
    hint = not_followed_hint(["beard", "hat"])
    assert "did not follow the prompt on beard, hat" in hint and "subject.class_images=" in hint


def test_priors_that_vary_much_less_than_the_last_ones_are_reported_as_narrowed():
    from lookalike.prior.audit import NARROWING, narrowed

    naive = {"prior_spread": 0.576, "prior_likeness": 0.308}  # the toy model's naive and refined priors
    line = narrowed(naive, {"prior_spread": 0.310, "prior_likeness": 0.437})
    assert line.startswith("the new priors vary less: feature spread 0.58 -> 0.31 (-46%), likeness to the photos 0.31 -> 0.44;")
    assert "name fewer attributes" in line
    assert narrowed(naive, {"prior_spread": 0.576 * (1 - NARROWING) + 0.001, "prior_likeness": 0.4}) is None  # within 25%
    assert narrowed(naive, {"prior_spread": 0.7, "prior_likeness": 0.3}) is None  # more varied
    assert narrowed({}, {"prior_spread": 0.1}) is None  # a report from before the spread was recorded
    assert narrowed({"prior_spread": 0.576}, {"prior_spread": 0.1}).endswith("or bring class images")  # no likeness: left out
    assert narrowed(naive, {"prior_spread": None}) is None  # a single prior has no spread


def test_the_summary_and_the_page_tell_what_to_do_when_the_prompt_did_not_take(tmp_path):
    from types import SimpleNamespace

    from lookalike.prior.audit import summary
    from lookalike.prior.audit_report import _since_section

    subject = {"name": "me", "priors": 100, "photos": 6, "class_prompt": "a photo of a man, clean-shaven",
               "refined_class_prompt": "a photo of a man, clean-shaven", "lines": [], "flags": [],
               "since": {"prior_prompts": ["a photo of a man"], "lines": ["beard: ... further from them"], "not_followed": ["beard"]}}
    hint = not_followed_hint(["beard"])
    assert hint in summary(SimpleNamespace(root=tmp_path), {"subjects": [subject]}, [])
    assert html.escape(hint) in _since_section(subject)
    followed = {**subject, "since": {**subject["since"], "not_followed": []}}
    assert "did not follow" not in summary(SimpleNamespace(root=tmp_path), {"subjects": [followed]}, [])
    assert "did not follow" not in _since_section(followed)


def test_photos_that_disagree_name_no_option():
    glasses = probes.compare(GLASSES, choices(0, 200), choices(3, 3), threshold=0.25)
    assert glasses.differs and glasses.subject_option is None
    assert "disagree" in glasses.line()
    assert probes.refine_prompt("a photo of a {class_noun}", [glasses]) == "a photo of a {class_noun}"


def test_refined_prompt_names_the_subjects_attributes_once():
    findings = [
        probes.compare(BEARD, choices(108, 92), choices(0, 6), 0.25),
        probes.compare(GLASSES, choices(20, 180), choices(6, 0), 0.25),
        probes.compare(HAT, choices(10, 190), choices(0, 6), 0.25),
    ]
    refined = probes.refine_prompt("a photo of a {class_noun}", findings)
    assert refined == "a photo of a {class_noun}, clean-shaven, wearing glasses"
    assert probes.refine_prompt(refined, findings) == refined
    toy_glasses = probes.compare(probes.Attribute("glasses", ("glasses", "no glasses")), choices(10, 190), choices(6, 0), 0.25)
    assert probes.refine_prompt("a photo of a man, no glasses", [toy_glasses]) == "a photo of a man, glasses"


class KeywordTexts:
    """Text features from the option's wording: axis 0 for 'beard', axis 1 for 'shaven'."""

    def __init__(self):
        self.seen = []

    def embed_texts(self, texts):
        self.seen += texts
        return torch.tensor([[1.0, 0.0] if "beard" in t else [0.0, 1.0] for t in texts])


def test_probe_choices_pick_the_nearest_option_text():
    texts = KeywordTexts()
    image_feats = torch.tensor([[0.9, 0.1], [0.2, 0.8], [3.0, 2.0]])
    option_feats = probes.option_features(texts, [BEARD, HAT], "man")
    assert texts.seen == [
        "a photo of a man, with a beard", "a photo of a man, clean-shaven", "a photo of a man, wearing a hat", "a photo of a man, bare-headed"
    ]
    assert option_feats["hat"].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    picked = probes.probe_choices(image_feats, option_feats)
    assert picked["beard"].tolist() == [0, 1, 0]
    assert probes.probe_text("owl", "perched") == "a photo of an owl, perched"


# ---------------------------------------------------------------- image checks


def noise_image(seed, size=64):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # coarse blocks: a stable perceptual hash
    return Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST)


def write_priors(folder, count=6):
    """Prior PNGs + manifest: distinct images, then a blank, a near-duplicate and a broken file."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        noise_image(i).save(folder / f"{i:03d}.png")
        files.append(f"{i:03d}.png")
    Image.new("RGB", (64, 64), (0, 0, 0)).save(folder / "blank.png")
    noise_image(2, size=80).save(folder / "dup.jpg", quality=90)  # resized and re-encoded copy of 002
    (folder / "broken.png").write_bytes((folder / "000.png").read_bytes()[:60])
    files += ["blank.png", "dup.jpg", "broken.png", "missing.png"]
    for f in files:
        append_jsonl(folder / "manifest.jsonl", {"file": f, "prompt": "a photo of a man", "seed": 0})
    return files


def test_broken_blank_and_near_duplicate_priors_are_flagged(tmp_path):
    files = write_priors(tmp_path / "priors")
    images = open_set(tmp_path / "priors", files, blank_std=4.0, duplicate_distance=4, desc="priors")
    flags = {f.file: f.problem for f in images.flags}
    assert flags == {"blank.png": "blank", "dup.jpg": "near-duplicate", "broken.png": "broken", "missing.png": "broken"}
    assert "002.png" in next(f.detail for f in images.flags if f.file == "dup.jpg")
    assert images.usable() == [f"{i:03d}.png" for i in range(6)] + ["dup.jpg"]


# ---------------------------------------------------------------- the verb


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("audit-clip"))


@pytest.fixture
def run_root(tmp_path):
    root = tmp_path / "run"
    write_priors(root / "priors" / "subject")
    photos = root / "instance" / "subject"
    photos.mkdir(parents=True)
    for i in range(4):
        noise_image(100 + i).save(photos / f"{i:03d}.png")
        append_jsonl(photos / "manifest.jsonl", {"file": f"{i:03d}.png", "source": f"p{i}.jpg", "crop": "center"})
    return root


def overrides(tiny_clip, *more):
    return [f"audit.clip_model={tiny_clip}", "subject.kind=person", "subject.class_noun=man", *more]


def test_audit_writes_sheets_and_reports_with_working_relative_links(run_root, tiny_clip, capsys):
    assert main(["audit", str(run_root), *overrides(tiny_clip)]) == 0
    assert "report:" in capsys.readouterr().out
    audit = run_root / "audit"
    assert sorted(p.name for p in audit.iterdir()) == ["photos-subject.png", "priors-subject.png", "report.html", "report.json"]
    report = json.loads((audit / "report.json").read_text())
    subject = report["subjects"][0]
    assert subject["priors"] == 10 and subject["photos"] == 4 and not subject["applied"]
    assert {f["file"]: f["problem"] for f in subject["flags"]} == {
        "blank.png": "blank", "dup.jpg": "near-duplicate", "broken.png": "broken", "missing.png": "broken"
    }
    person = [a.name for a in probes.load_attributes("person")]
    assert [a["attribute"] for a in subject["attributes"]] == person
    assert all(sum(a["prior_counts"]) == 7 and sum(a["subject_counts"]) == 4 for a in subject["attributes"])
    with Image.open(audit / "priors-subject.png") as sheet:
        assert sheet.size == (10 * 96, 96 + 14)
    links = re.findall(r"(?:src|href)='([^']+)'", (audit / "report.html").read_text())
    assert len(links) == 2 + 4  # two sheets, four flagged priors
    assert all((audit / link).exists() for link in links if "missing" not in link and "broken" not in link)


def test_an_audit_after_regenerated_priors_compares_with_the_last_one(run_root, tiny_clip, capsys):
    assert main(["audit", str(run_root), *overrides(tiny_clip)]) == 0
    first = json.loads((run_root / "audit" / "report.json").read_text())["subjects"][0]
    assert "since" not in first
    assert main(["audit", str(run_root), *overrides(tiny_clip)]) == 0  # the same priors: nothing to compare
    assert "since" not in json.loads((run_root / "audit" / "report.json").read_text())["subjects"][0]
    manifest = run_root / "priors" / "subject" / "manifest.jsonl"
    rows = [r | {"prompt": "a photo of a man, clean-shaven"} for r in read_jsonl(manifest)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["audit", str(run_root), *overrides(tiny_clip, "subject.class_prompt=a photo of a man, clean-shaven")]) == 0
    out = capsys.readouterr().out
    second = json.loads((run_root / "audit" / "report.json").read_text())["subjects"][0]
    assert second["since"]["prior_prompts"] == ["a photo of a man"]
    assert "since the priors of 'a photo of a man':" in out
    assert all(line in out for line in second["since"]["lines"])
    assert "Since the priors of" in (run_root / "audit" / "report.html").read_text()
    assert isinstance(second["since"]["not_followed"], list)
    assert 0 < second["prior_spread"] <= 2 and -1 <= second["prior_likeness"] <= 1
    assert second["since"]["prior_spread"] == first["prior_spread"] and second["since"]["narrowed"] is None  # the same images
    assert main(["audit", str(run_root), *overrides(tiny_clip, "subject.class_prompt=a photo of a man, clean-shaven")]) == 0
    again = json.loads((run_root / "audit" / "report.json").read_text())["subjects"][0]  # the same priors, audited again
    assert again["since"] == second["since"]


def test_apply_writes_the_refined_prompt_into_the_run_config(run_root, tiny_clip):
    run = Run.open(run_root, overrides=overrides(tiny_clip))
    subject = run.subject()
    finding = probes.compare(BEARD, choices(108, 92), choices(0, 6), 0.25)
    refined = probes.refine_prompt(subject.class_prompt, [finding])
    result = SubjectAudit(subject, None, None, [finding], refined)
    assert result.refined_prompt == "a photo of a man, clean-shaven"
    assert apply_refined_prompts(run, [result]) == ["subject"]
    assert Run.open(run_root).subject().resolved_class_prompt() == "a photo of a man, clean-shaven"


def test_apply_flag_runs_end_to_end_and_keeps_config_valid(run_root, tiny_clip):
    assert main(["audit", str(run_root), *overrides(tiny_clip, "audit.apply=true")]) == 0
    report = json.loads((run_root / "audit" / "report.json").read_text())["subjects"][0]
    saved = Run.open(run_root).subject().resolved_class_prompt()
    assert saved == (report["refined_class_prompt"] if report["applied"] else "a photo of a man")


@pytest.mark.parametrize("problem", ["no-priors", "bad-clip"])
def test_failures_explain_and_leave_the_previous_report(run_root, tiny_clip, tmp_path, capsys, problem):
    old = run_root / "audit" / "report.html"
    old.parent.mkdir()
    old.write_text("previous report")
    clip = tmp_path / "no-such-clip" if problem == "bad-clip" else tiny_clip
    if problem == "no-priors":
        shutil.rmtree(run_root / "priors")
    assert main(["audit", str(run_root), *overrides(clip)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines: progress bars
    expected = {"no-priors": "lookalike priors", "bad-clip": "could not load the CLIP model"}[problem]
    assert err.startswith("lookalike audit: error:") and expected in err
    assert old.read_text() == "previous report" and sorted(p.name for p in old.parent.iterdir()) == ["report.html"]


def test_stop_file_stops_cleanly_and_leaves_the_previous_report(run_root, tiny_clip, capsys):
    old = run_root / "audit" / "report.html"
    old.parent.mkdir()
    old.write_text("previous report")
    (run_root / "STOP").touch()
    assert main(["audit", str(run_root), *overrides(tiny_clip, "audit.apply=true")]) == 0
    out = capsys.readouterr().out.strip()
    assert out == "stopped after 0 of 1 subjects (the previous audit report is unchanged); run the same command again to continue"
    assert old.read_text() == "previous report" and sorted(p.name for p in old.parent.iterdir()) == ["report.html"]
    assert not (run_root / "STOP").exists() and read_jsonl(run_root / "events.jsonl")[-1]["event"] == "stopped"
    assert Run.open(run_root).subject().resolved_class_prompt() == "a photo of a man"  # audit.apply changed nothing


def test_a_toy_build_clip_folder_is_probed_with_the_toy_words(tmp_path):
    from lookalike.toyworld import is_toy_clip

    assert is_toy_clip("toy") and not is_toy_clip(tmp_path) and not is_toy_clip("openai/clip-vit-large-patch14")
    (tmp_path / "toyworld.json").write_text('{"unet_step": 1}')
    assert is_toy_clip(tmp_path)


def test_toy_clip_is_the_default_for_the_toy_model(run_root):
    run = Run.open(run_root)
    from lookalike.prior.audit import clip_source

    assert clip_source(run) == "toy"
    run.config.model.source = "runwayml/stable-diffusion-v1-5"
    assert clip_source(run) == "openai/clip-vit-large-patch14"
    with pytest.raises(LookalikeError):
        audit_run(Run.open(run_root, overrides=["audit.clip_model=" + str(run_root / "nothing")]))


def test_priors_regenerated_much_alike_are_reported_in_the_summary_and_the_page(run_root, capsys):
    """With the toy world's CLIP, whose features tell noise pictures apart (the tiny random CLIP hardly does)."""
    assert main(["audit", str(run_root), *overrides("toy")]) == 0
    folder = run_root / "priors" / "subject"
    rows = [r | {"prompt": "a photo of a man, clean-shaven"} for r in read_jsonl(folder / "manifest.jsonl")]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i in range(6):  # the new priors: one picture with a few pixels changed
        arr = np.asarray(noise_image(0)).copy()
        arr[i, i] = 255 - arr[i, i]
        Image.fromarray(arr).save(folder / f"{i:03d}.png")
    noise_image(0, size=80).save(folder / "dup.jpg", quality=90)
    capsys.readouterr()
    assert main(["audit", str(run_root), *overrides("toy", "subject.class_prompt=a photo of a man, clean-shaven")]) == 0
    out = capsys.readouterr().out
    subject = json.loads((run_root / "audit" / "report.json").read_text())["subjects"][0]
    assert subject["prior_spread"] < 0.75 * subject["since"]["prior_spread"], (subject["prior_spread"], subject["since"])
    assert subject["since"]["narrowed"].startswith("the new priors vary less: feature spread")
    assert subject["since"]["narrowed"] in out and "priors' feature spread (DIV-feat, CLIP)" in out
    page = (run_root / "audit" / "report.html").read_text()
    assert html.escape(subject["since"]["narrowed"]) in page and html.escape("Priors' feature spread") in page
