"""`lookalike eval`: tiny SD1 checkpoints (full and LoRA) written here, tiny random CLIP / DINO ViT,
real images on disk; the report, the page, the cache, the recommendation rule and the bad paths."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch
from conftest import make_photos
from PIL import Image
from skimage import data
from test_features import save_tiny_clip, save_tiny_vit

from lookalike import cli
from lookalike.errors import LookalikeError
from lookalike.metrics import evaluate, recommend
from lookalike.run import Run, read_jsonl
from lookalike.sample.scoring import get_scorer

# 32 px renders, 2 steps, no classifier-free guidance (guidance 1 skips the unconditional pass): 6 images a model.
EVAL_FAST = ["eval.samples_per_prompt=2", "eval.steps=2", "eval.max_prompts=2", "eval.batch_size=6", "eval.resolution=32",
             "eval.guidance_scale=1.0", "prepare.resolution=64"]


def write_instance(run: Run, images: list[Image.Image]) -> None:
    folder = run.instance_dir(run.subject().name)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(images):
        image.convert("RGB").resize((64, 64)).save(folder / f"{i:03d}.png")
        rows.append(json.dumps({"file": f"{i:03d}.png", "source": f"photo_{i}.png", "crop": "center"}))
    (folder / "manifest.jsonl").write_text("\n".join(rows) + "\n")


def info(run: Run, method: str, step: int) -> str:
    s = run.subject()
    subject = {"name": s.name, "identifier": s.identifier, "class_noun": s.class_noun, "instance_prompt": s.resolved_instance_prompt()}
    return json.dumps({"method": method, "base_model": run.config.model.source, "family": "sd1", "subjects": [subject], "step": step, "train": {}})


def write_full_checkpoint(run: Run, step: int, seed: int) -> None:
    """A full-pipeline checkpoint: the base model's folder with its UNet weights moved a little."""
    from diffusers import UNet2DConditionModel

    folder = run.checkpoints_dir / f"step-{step:06d}"
    shutil.copytree(run.config.model.source, folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in unet.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    unet.save_pretrained(folder / "unet")
    (folder / "lookalike.json").write_text(info(run, "full", step))


def write_lora_model(run: Run, step: int) -> None:
    """model/: LoRA adapters on the base UNet with non-zero weights, saved in the diffusers format."""
    from lookalike.models.load import load_components
    from lookalike.models.lora import UNET_TARGETS, add_lora, save_lora

    parts = load_components(run.config.model)
    add_lora(parts.unet, UNET_TARGETS, rank=4, alpha=4)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in parts.unet.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    save_lora(run.model_dir, "sd1", parts.unet, [])
    (run.model_dir / "lookalike.json").write_text(info(run, "lora", step))


@pytest.fixture(scope="module")
def extractors(tmp_path_factory):
    root = tmp_path_factory.mktemp("extractors")
    return {"clip": save_tiny_clip(root / "clip"), "vit": save_tiny_vit(root / "vit", image_size=64)}


def open_run(root, tiny_sd1, extractors, *extra) -> Run:
    return Run.open(root, overrides=[f"model.source={tiny_sd1}", f"eval.clip_model={extractors['clip']}",
                                     f"eval.dino_model={extractors['vit']}", *EVAL_FAST, *extra])


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_sd1, extractors):
    """A run with the base model, a full checkpoint at step 2 and a LoRA model at step 4, evaluated once."""
    run = open_run(tmp_path_factory.mktemp("run"), tiny_sd1, extractors, "subject.class_noun=cup")
    photos = make_photos(run.root / "photos", count=3)
    write_instance(run, [Image.open(p) for p in photos])
    write_full_checkpoint(run, 2, seed=1)
    write_lora_model(run, 4)
    summary = evaluate.eval_run(run)
    return run, summary


def metrics_of(run: Run) -> dict:
    report = json.loads((run.root / "eval" / "report.json").read_text())
    return report, {row["target"]: row for row in report["rows"]}


def test_report_has_a_row_per_model_with_finite_metrics(evaluated):
    run, summary = evaluated
    report, rows = metrics_of(run)
    assert [(r["target"], r["step"]) for r in report["rows"]] == [("base", 0), ("step-000002", 2), ("model", 4)]
    for row in rows.values():
        for name in ("dino", "clip_i", "clip_t", "pres", "div_feat"):
            assert math.isfinite(row["metrics"][name]), (row["target"], name)
        assert row["metrics"]["face_similarity"] is None  # an object subject: no face metric
        assert row["counts"] == {"prompts": 2, "images": 4, "class_images": 2, "photos": 3}
        assert row["likeness_metric"] == "dino"
        assert [p["text"] for p in row["prompts"]] == ["a cup on the beach", "a cup in the snow"]  # CLIP-T without the identifier
    # different weights render different pictures, so the likeness differs between models
    assert len({rows[t]["metrics"]["dino"] for t in rows}) == 3
    rec = report["recommendation"]
    assert rec["checkpoint"] in ("step-000002", "model") and "CLIP-T" in rec["rule"]
    assert f"recommended: {rec['checkpoint']}" in summary and f"rule: {rec['rule']}" in summary
    (line,) = [line for line in summary.splitlines() if line.startswith("recommended:")]
    assert line.count(rec["checkpoint"]) == 1 and " — " in line  # the name once, then why


def test_same_seeds_for_every_model_and_samples_on_disk(evaluated):
    run, _ = evaluated
    _, rows = metrics_of(run)
    names = [[f.split("/", 2)[2] for p in row["prompts"] for f in p["files"]] for row in rows.values()]
    assert names[0] == names[1] == names[2] == ["subject/00-0.png", "subject/00-1.png", "subject/01-0.png", "subject/01-1.png"]
    base = np.asarray(Image.open(run.root / "eval" / rows["base"]["prompts"][0]["files"][0]))
    lora = np.asarray(Image.open(run.root / "eval" / rows["model"]["prompts"][0]["files"][0]))
    assert base.shape == (32, 32, 3) and not np.array_equal(base, lora)


def test_html_links_existing_samples_and_plots_every_metric(evaluated):
    run, _ = evaluated
    page = (run.root / "eval" / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 3 * 3  # 3 models × (2 prompts + the class prompt)
    assert all((run.root / "eval" / src).is_file() for src in sources)
    assert not any(src.startswith(("/", "file:")) for src in sources)  # relative: works from file://
    plotted = re.findall(r'<svg class="plot" data-metric="(\w+)"', page)
    assert plotted == ["dino", "clip_i", "clip_t", "pres", "div_feat"]
    assert page.count("<polyline") == 5 and page.count("<circle") == 15


def test_rerun_reuses_scored_models_and_redoes_a_changed_one(evaluated):
    run, _ = evaluated
    before, rows_before = metrics_of(run)
    lines = len(read_jsonl(run.events_path))
    summary = evaluate.eval_run(run)
    events = [e for e in read_jsonl(run.events_path)[lines:] if e["verb"] == "eval"]
    assert sorted(e["model"] for e in events if e["event"] == "cached") == ["base", "model", "step-000002"]
    assert not [e for e in events if e["event"] == "scored"]
    assert "3 of 3 models reused" in summary
    assert metrics_of(run)[0]["rows"] == before["rows"]

    (run.checkpoints_dir / "step-000002" / "lookalike.json").write_text(info(run, "full", 2))  # weights "changed"
    lines = len(read_jsonl(run.events_path))
    evaluate.eval_run(run)
    events = [e for e in read_jsonl(run.events_path)[lines:] if e["verb"] == "eval"]
    assert [e["model"] for e in events if e["event"] == "scored"] == ["step-000002"]
    assert metrics_of(run)[1]["step-000002"]["metrics"] == rows_before["step-000002"]["metrics"]  # same seeds, same scores


# ---------------------------------------------------------------- the recommendation rule


def row(target, step, likeness, clip_t, metric="dino", subject="me"):
    return {"target": target, "step": step, "subject": subject, "likeness_metric": metric,
            "metrics": {metric: likeness, "clip_t": clip_t}}


def pick(rows, tolerance=0.02):
    return recommend.recommend(recommend.summarise(rows), tolerance, {r["likeness_metric"] for r in rows})


def test_rule_picks_the_most_alike_checkpoint_that_keeps_prompt_following():
    rows = [row("base", 0, 0.20, 0.300), row("step-000200", 200, 0.50, 0.295), row("step-000400", 400, 0.60, 0.285),
            row("step-000600", 600, 0.70, 0.250)]  # 600 is the most alike but has stopped following prompts
    rec = pick(rows)
    assert (rec.target, rec.step) == ("step-000400", 400)
    assert "2 of 3 checkpoints" in rec.reason and "0.2800" in rec.reason  # floor = 0.300 - 0.02
    assert pick(rows, tolerance=0.1).target == "step-000600"
    assert pick(rows, tolerance=0.0).target == "step-000200" or pick(rows, tolerance=0.0).reason.startswith("no checkpoint")


def test_rule_ties_go_to_the_earlier_step_and_face_identity_names_the_rule():
    rows = [row("base", 0, 0.1, 0.3, "face_similarity"), row("step-000400", 400, 0.6, 0.3, "face_similarity"),
            row("step-000200", 200, 0.6, 0.3, "face_similarity")]
    rec = pick(rows)
    assert rec.target == "step-000200" and "face identity" in rec.rule and "base model's CLIP-T" in rec.rule


def test_rule_without_base_or_without_any_checkpoint_in_tolerance():
    rec = pick([row("step-000200", 200, 0.5, 0.30), row("step-000400", 400, 0.9, 0.20)])
    assert rec.target == "step-000200" and "best CLIP-T among the checkpoints" in rec.rule
    rec = pick([row("base", 0, 0.2, 0.40), row("step-000200", 200, 0.5, 0.30), row("step-000400", 400, 0.9, 0.25)])
    assert rec.target == "step-000200" and rec.reason.startswith("no checkpoint keeps CLIP-T")


def test_rule_averages_subjects_of_one_checkpoint():
    rows = [row("step-000200", 200, 0.8, 0.3, subject="a"), row("step-000200", 200, 0.2, 0.3, subject="b"),
            row("step-000400", 400, 0.6, 0.3, subject="a"), row("step-000400", 400, 0.6, 0.3, subject="b")]
    assert pick(rows).target == "step-000400"  # mean 0.6 beats mean 0.5


# ---------------------------------------------------------------- people, missing DINO, STOP


@pytest.fixture
def person_run(tmp_path, tiny_sd1, extractors):
    """A person subject photographed as scikit-image's astronaut, one full checkpoint, no base model."""
    run = open_run(tmp_path / "run", tiny_sd1, extractors, "subject.kind=person", "subject.class_noun=woman",
                   "eval.include_base=false", "eval.max_prompts=1")
    astronaut = Image.fromarray(data.astronaut())
    write_instance(run, [astronaut, astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    write_full_checkpoint(run, 2, seed=1)
    return run


def test_person_without_dino_reports_face_identity_and_says_dino_was_skipped(person_run, tmp_path):
    run = Run(person_run.root, person_run.config.model_copy(deep=True))
    run.config.eval.dino_model = str(tmp_path / "no-such-vit")
    summary = evaluate.eval_run(run)
    report, rows = metrics_of(run)
    row = rows["step-000002"]
    assert list(rows) == ["step-000002"] and row["likeness_metric"] == "face_similarity"
    assert row["metrics"]["dino"] is None and row["pres_div_features"] == "clip"  # PRES and DIV from CLIP features
    assert row["metrics"]["face_found_share"] == 0.0 and row["metrics"]["face_similarity"] == 0.0  # random pixels show no face
    assert all(math.isfinite(row["metrics"][m]) for m in ("clip_i", "clip_t", "pres", "div_feat"))
    assert any(note.startswith("DINO skipped") for note in report["notes"]) and "note: DINO skipped" in summary
    page = (run.root / "eval" / "index.html").read_text()
    assert 'data-metric="dino"' not in page and 'data-metric="face_similarity"' in page
    assert report["recommendation"]["checkpoint"] == "step-000002" and "face identity" in report["recommendation"]["rule"]


def test_a_person_in_the_toy_world_is_judged_by_clip_i_not_face_identity(tmp_path, tiny_sd1, extractors):
    import shutil

    from lookalike.metrics.sample_scores import open_extractors

    toy_clip = tmp_path / "toy-clip"  # a build's CLIP export carries this marker
    shutil.copytree(extractors["clip"], toy_clip)
    (toy_clip / "toyworld.json").write_text('{"unet_step": 1}')
    run = open_run(tmp_path / "run", tiny_sd1, extractors, "subject.kind=person", "subject.class_noun=man")
    assert open_extractors(run.config).faces is not None  # a real CLIP: face identity for people
    run.config.eval.clip_model = str(toy_clip)
    ex = open_extractors(run.config)
    assert ex.faces is None and any("face identity is off for the toy world" in n for n in ex.notes)


def test_stop_file_leaves_a_partial_report_and_no_cache(person_run):
    person_run.stop_path.touch()
    summary = evaluate.eval_run(person_run)
    report, rows = metrics_of(person_run)
    assert report["stopped"] and rows == {} and summary.startswith("stopped after 0 of 1 models")
    assert summary.endswith("run the same command again to continue")
    assert not person_run.stop_path.exists() and not (person_run.root / "eval" / "cache" / "step-000002.json").exists()
    assert [e["event"] for e in read_jsonl(person_run.events_path)][-1] == "stopped"


# ---------------------------------------------------------------- bad input


def with_overrides(run: Run, *overrides: str) -> Run:
    from lookalike import config

    return Run(run.root, config.build(run.config.model_dump(), list(overrides)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["eval.clip_model=/no/such/clip"], "could not load the CLIP model"),
        (["eval.prompts_file=/no/such/prompts.toml"], "eval.prompts_file /no/such/prompts.toml not found"),
        (["eval.class_prompt=a photo of a {kind}"], "eval.class_prompt"),
        (["subject.name=other"], "no prepared photos of 'other'"),
    ],
)
def test_bad_settings_give_one_line_and_leave_the_report(evaluated, overrides, message):
    run, _ = evaluated
    before = (run.root / "eval" / "report.json").read_bytes()
    with pytest.raises(LookalikeError, match=re.escape(message)) as err:
        evaluate.eval_run(with_overrides(run, *overrides))
    assert "\n" not in str(err.value)
    assert (run.root / "eval" / "report.json").read_bytes() == before


def test_prompt_file_without_subject_placeholder_and_replace_mode(evaluated, tmp_path):
    from lookalike.metrics import prompt_set

    run, _ = evaluated
    bad = tmp_path / "bad.toml"
    bad.write_text('[object]\nmine = ["a cup on a table"]\n')
    with pytest.raises(LookalikeError, match=r"needs a \{subject\} placeholder"):
        evaluate.eval_run(with_overrides(run, f"eval.prompts_file={bad}"))
    good = tmp_path / "good.toml"
    good.write_text('[object]\nmine = ["a {subject} on a table"]\n')
    ecfg = with_overrides(run, f"eval.prompts_file={good}", "eval.prompts_mode=replace").config.eval
    prompts = prompt_set.subject_prompts(run.subject(), ecfg)
    assert [(p.group, p.prompt, p.text) for p in prompts] == [("mine", "a ohwx cup on a table", "a cup on a table")]
    merged = prompt_set.subject_prompts(run.subject(), with_overrides(run, f"eval.prompts_file={good}", "eval.max_prompts=100").config.eval)
    assert len(merged) == 13 and merged[-1].group == "mine"  # the bundled 12 object prompts, then yours


def test_nothing_to_evaluate_without_checkpoints(tmp_path, tiny_sd1, extractors):
    run = open_run(tmp_path / "run", tiny_sd1, extractors)
    write_instance(run, [Image.fromarray(data.coffee())])
    with pytest.raises(LookalikeError, match="nothing to evaluate.*lookalike train"):
        evaluate.eval_run(run)


def test_cli_prints_a_bad_value_as_one_line(evaluated, capsys):
    run, _ = evaluated
    assert cli.main(["eval", str(run.root), "eval.samples_per_prompt=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lookalike eval: error:") and "eval.samples_per_prompt" in err and "\n" not in err


# ---------------------------------------------------------------- best-of-N scorers


def test_feature_scorers_rank_the_subject_photo_first(evaluated):
    run, _ = evaluated
    photo = Image.open(run.instance_dir("subject") / "000.png")
    other = Image.fromarray(data.coffee()).resize((64, 64))
    for name in ("dino", "clip", "identity"):
        scorer = get_scorer(name, run)
        first, second = scorer.score([photo, other], [photo])
        assert first == pytest.approx(1.0, abs=1e-4) and second < first, name
    assert get_scorer("identity", run).name.startswith("DINO")


def test_face_scorer_knows_the_astronaut():
    from lookalike.metrics.scorers import face_scorer

    astronaut = Image.fromarray(data.astronaut())
    scores = face_scorer(None).score([astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), Image.fromarray(data.coffee())], [astronaut])
    assert scores[0] > 0.8 and scores[1] == 0.0  # no face in the coffee cup counts 0


def test_svg_plot_puts_higher_values_higher_and_later_steps_to_the_right():
    from lookalike.metrics.report import svg_plot

    rows = [row("base", 0, 0.2, 0.3), row("step-000400", 400, 0.9, 0.3), row("step-000200", 200, 0.5, 0.3)]
    svg = svg_plot("dino", rows, recommended_step=400)
    points = [(float(cx), float(cy), tip) for cx, cy, tip in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)".*?<title>(.*?)</title>', svg)]
    by_target = {tip.split(" · ")[1]: (cx, cy) for cx, cy, tip in points}
    assert by_target["base"][0] < by_target["step-000200"][0] < by_target["step-000400"][0]
    assert by_target["base"][1] > by_target["step-000200"][1] > by_target["step-000400"][1]  # SVG y grows downwards
    assert f'x1="{by_target["step-000400"][0]:.1f}"' in svg  # the recommended step's dashed line


def test_auto_extractors_never_send_the_toy_model_to_the_hub():
    from lookalike import config
    from lookalike.metrics.sample_scores import HUB_CLIP, clip_source, dino_source

    toy = config.build({}, ["model.source=toy"])
    assert (clip_source(toy), dino_source(toy)) == ("toy", "none")
    real = config.build({}, ["model.source=runwayml/stable-diffusion-v1-5"])
    assert (clip_source(real), dino_source(real)) == (HUB_CLIP, "facebook/dino-vits16")
    assert dino_source(config.build({}, ["eval.dino_model=None"])) == "none"
