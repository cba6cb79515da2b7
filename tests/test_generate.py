"""generate: style pack, best-of-N, batched seeds, exact re-render from a PNG, trained models, bad input.

Renders are 32 px with 2 sampling steps on the tiny random models: the pixels are noise, but
every code path (pipelines, schedulers, LoRA, PNG chunks) is the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_photos
from lookalike.cli import main
from lookalike.config import GenerateConfig
from lookalike.errors import LookalikeError
from lookalike.models.tiny import FAMILIES
from lookalike.run import Run, read_jsonl
from lookalike.sample.generate import generate_run, render_batch
from lookalike.sample.pngmeta import parse_a1111, read_params, read_text_chunks
from lookalike.sample.scoring import HistogramScorer, get_scorer, top_k
from lookalike.sample.styles import build_prompts, load_pack, select_styles

REQUIRED_STYLES = [
    "film-noir", "studio-ghibli", "monet", "hokusai", "renoir", "norman-rockwell", "bosch", "keith-haring",
    "art-deco", "cyberpunk-neon", "pencil-drawing", "line-drawing", "oil-painting", "watercolor",
    "cowboy-watercolor", "early-photography", "muppet", "video-game", "sci-fi-film", "as-child",
    "as-elderly", "in-space",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on a shared, busy 2-core machine two OpenMP threads spin against each other
    and a tiny render takes 15 s instead of 0.2 s (measured). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def settings(model: Path, *extra: str) -> list[str]:
    return [
        f"model.source={model}", "prepare.resolution=32", "generate.steps=2", "generate.checkpoint=base",
        'generate.styles=["film-noir"]', "generate.boosters=[]", "generate.batch_size=2",
        "subject.identifier=ohwx", "subject.class_noun=man", *extra,
    ]


def add_photos(root: Path) -> list[Path]:
    """Prepared subject photos as `lookalike prepare` leaves them (PNGs + manifest)."""
    folder = root / "instance" / "subject"
    paths = make_photos(folder, count=3, size=32)
    rows = [json.dumps({"file": p.name, "source": str(p), "crop": "center"}) for p in paths]
    (folder / "manifest.jsonl").write_text("\n".join(rows) + "\n")
    return paths


def sample_folders(root: Path, prefix: str = "2") -> list[Path]:
    return sorted(p for p in (root / "samples").glob(f"{prefix}*") if p.is_dir())


# ---------------------------------------------------------------- style pack (no models)


def test_bundled_pack_covers_the_requested_styles():
    pack = load_pack()
    assert set(REQUIRED_STYLES) <= set(pack)
    assert all("{subject}" in s.prompt for s in pack.values())


def test_prompts_expand_subject_boosters_and_negatives():
    gen = GenerateConfig(styles=["film-noir", "monet"], prompts=["{subject} at the beach"],
                         boosters=["highly detailed"], negative_prompt="blurry")
    specs = build_prompts(gen, "ohwx man")
    assert [s.group for s in specs] == ["film-noir", "monet", "prompt-1"]
    assert specs[0].prompt.startswith("a film noir still of ohwx man,") and specs[0].prompt.endswith(", highly detailed")
    assert specs[0].negative_prompt == "color, saturated, cartoon, blurry"
    assert specs[2].prompt == "ohwx man at the beach, highly detailed" and specs[2].negative_prompt == "blurry"


def test_own_style_file_merges_or_replaces(tmp_path):
    own = tmp_path / "mine.toml"
    own.write_text('[styles.lego]\nprompt = "{subject} as a lego figure"\n\n[styles.monet]\nprompt = "{subject}, Monet"\n')
    merged = load_pack(str(own), "merge")
    assert merged["lego"].prompt == "{subject} as a lego figure" and merged["monet"].prompt == "{subject}, Monet"
    assert "film-noir" in merged
    assert list(load_pack(str(own), "replace")) == ["lego", "monet"]
    assert [s.name for s in select_styles(merged, "lego")] == ["lego"]
    assert [s.name for s in select_styles(merged, ["lego", "monet", "lego"])] == ["lego", "monet"]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[styles.x]\nprompt = "a cat"\n', "needs a {subject}"),
        ('[styles.x]\nprompt = "{subject} in {place}"\n', "only {subject}"),
        ('[styles.x]\nprompt = "{subject}"\ncolour = "red"\n', "unknown key"),
        ('[styles.X_Y]\nprompt = "{subject}"\n', "lower-case"),
        ('[x]\nprompt = "{subject}"\n', r"\[styles.NAME\]"),
        ("[styles.x\n", "not valid TOML"),
    ],
)
def test_bad_style_files_say_what_to_fix(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(LookalikeError, match=message):
        load_pack(str(path))


def test_unknown_style_and_missing_file_are_named():
    with pytest.raises(LookalikeError, match="no style named 'van-gogh'.*film-noir"):
        select_styles(load_pack(), ["van-gogh"])
    with pytest.raises(LookalikeError, match="not found"):
        load_pack("/nonexistent/styles.toml")


# ---------------------------------------------------------------- scoring (no models)


def test_top_k_orders_by_score_and_keeps_ties_in_seed_order():
    assert top_k([0.2, 0.9, 0.5, 0.9], 3) == [1, 3, 2]
    assert top_k([0.2, 0.9], None) == [1, 0]


def test_histogram_stand_in_prefers_images_like_the_photos(tmp_path):
    photos = [Image.open(p) for p in make_photos(tmp_path, count=2, size=32)]
    scorer = get_scorer("histogram", run=None)
    assert "stand-in" in scorer.name
    grey = Image.new("RGB", (32, 32), (128, 128, 128))
    scores = scorer.score([grey, photos[0]], photos)
    assert scores[1] > scores[0]
    with pytest.raises(LookalikeError, match="no scorer named 'likeness9000'"):
        get_scorer("likeness9000", run=None)


# ---------------------------------------------------------------- rendering on tiny models


@pytest.fixture(scope="module", params=FAMILIES)
def generated(request, tiny_models, tmp_path_factory):
    """A generate run from the CLI per family: 3 candidates for one style, best 1 kept."""
    root = tmp_path_factory.mktemp(f"generate-{request.param}") / "run"
    add_photos(root)
    rc = main(["generate", str(root), *settings(tiny_models[request.param], "generate.seeds_per_prompt=3", "generate.keep=1")])
    assert rc == 0
    (folder,) = sample_folders(root)
    return root, folder


def test_cli_generate_keeps_the_best_of_n_with_its_parameters(generated):
    root, folder = generated
    rows = read_jsonl(folder / "manifest.jsonl")
    assert [r["seed"] for r in rows] == [0, 1, 2] and sum(r["kept"] for r in rows) == 1
    (best,) = [r for r in rows if r["kept"]]
    assert best["score"] == max(r["score"] for r in rows) and best["rank"] == 1
    assert sorted(p.name for p in folder.glob("*.png")) == ["contact-sheet.png", best["file"]]
    image = Image.open(folder / best["file"])
    assert image.size == (32, 32)
    refs = [Image.open(p) for p in sorted((root / "instance" / "subject").glob("*.png"))]
    assert HistogramScorer().score([image.convert("RGB")], refs)[0] == pytest.approx(best["score"])
    a1111 = parse_a1111(read_text_chunks(folder / best["file"])["parameters"])
    assert a1111["Prompt"].startswith("a film noir still of ohwx man")
    assert (a1111["Steps"], a1111["Sampler"], a1111["Seed"], a1111["Size"]) == ("2", "DPM++ 2M", str(best["seed"]), "32x32")
    assert len(a1111["Model hash"]) == 10
    assert 'data-images' in (folder / "index.html").read_text() and (folder / "sheets" / "film-noir.png").is_file()


def test_generate_from_png_rerenders_bit_exactly(generated, capsys):
    root, folder = generated
    (best,) = [r for r in read_jsonl(folder / "manifest.jsonl") if r["kept"]]
    capsys.readouterr()
    assert main(["generate", "--from", str(folder / best["file"])]) == 0
    assert "bit-identical" in capsys.readouterr().out
    (again,) = sample_folders(root, "rerender-")
    original = np.asarray(Image.open(folder / best["file"]))
    assert np.array_equal(np.asarray(Image.open(again / best["file"])), original)
    assert read_params(again / best["file"]).seed == best["seed"]


def test_a_seed_renders_the_same_in_any_batch(tiny_models):
    from lookalike.models.load import load_pipeline
    from lookalike.config import ModelConfig

    pipeline, _ = load_pipeline(ModelConfig(source=str(tiny_models["sd1"])))
    pipeline.set_progress_bar_config(disable=True)
    template = read_params_template()
    rows = [["a photo of ohwx man", "blurry", seed] for seed in (3, 4, 5)]
    as_array = lambda images: [np.asarray(i).astype(int) for i in images]  # noqa: E731
    batch = as_array(render_batch(pipeline, rows, template))
    shuffled = as_array(render_batch(pipeline, [rows[2], rows[0]], template))
    singles = [as_array(render_batch(pipeline, [row], template))[0] for row in rows]
    for i in range(3):  # equal up to the last float bit, which can move a pixel by one level
        assert np.abs(batch[i] - singles[i]).max() <= 1
    assert np.abs(shuffled[0] - singles[2]).max() <= 1 and np.abs(shuffled[1] - singles[0]).max() <= 1
    assert np.abs(singles[0] - singles[1]).mean() > 10  # different seeds: different pictures


def read_params_template():
    from lookalike.sample.pngmeta import ImageParams

    return ImageParams(
        prompt="", negative_prompt="", seed=0, steps=2, guidance_scale=7.5, scheduler="dpm++", width=32, height=32,
        model_name="m", model_hash=None, lora_hash=None, base_model="m", family="sd1", method="base", run="r",
        checkpoint="base", dtype="float32", device="cpu",
    )


def test_python_generate_renders_styles_and_prompts_keeping_all(tmp_path, tiny_models):
    run = Run.open(tmp_path / "run", overrides=settings(
        tiny_models["sd2"], 'generate.styles=["monet","in-space"]', 'generate.prompts=["{subject} at the beach"]',
        "generate.seeds_per_prompt=2", "generate.keep=2", "generate.seed=7", "generate.scheduler=euler_a",
        'generate.boosters=["award-winning"]',
    ))
    summary = generate_run(run)
    (folder,) = sample_folders(run.root)
    assert "6 images" in summary
    rows = read_jsonl(folder / "manifest.jsonl")
    assert [(r["group"], r["seed"]) for r in rows] == [(g, s) for g in ("monet", "in-space", "prompt-1") for s in (7, 8)]
    params = read_params(folder / "prompt-1-2-s8.png")
    assert params.prompt == "ohwx man at the beach, award-winning" and params.scheduler == "euler_a"
    assert params.family == "sd2" and params.method == "base" and params.score is None
    events = [e["event"] for e in read_jsonl(run.events_path) if e["verb"] == "generate"]
    assert events[0] == "start" and events[-1] == "done" and "progress" in events


def write_full_model(run: Run, source: Path) -> None:
    """A full fine-tune as `lookalike train` leaves it: a pipeline folder with lookalike.json."""
    import shutil

    from lookalike.train.checkpoint import write_info

    shutil.copytree(source, run.model_dir)
    write_info(run.model_dir, {"method": "full", "base_model": str(source), "family": "sd1", "step": 10,
                               "subjects": [], "train": {}})


def write_lora_model(run: Run, source: Path) -> None:
    """A LoRA run's model: adapters with non-zero weights, so they change the picture."""
    from lookalike.models.lora import add_lora, save_lora
    from lookalike.models.load import load_pipeline
    from lookalike.train.checkpoint import write_info

    pipeline, _ = load_pipeline(run.config.model)
    add_lora(pipeline.unet, ["to_q", "to_k", "to_v", "to_out.0"], rank=4, alpha=4)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in pipeline.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    run.model_dir.mkdir(parents=True)
    save_lora(run.model_dir, "sd1", pipeline.unet, [])
    write_info(run.model_dir, {"method": "lora", "base_model": str(source), "family": "sd1", "step": 10,
                               "subjects": [], "train": {}})


@pytest.mark.parametrize("method", ["full", "lora"])
def test_trained_models_render_and_rerender_exactly(tmp_path, tiny_models, method, capsys):
    source = tiny_models["sd1"]
    run = Run.open(tmp_path / "me", overrides=settings(source, "generate.seeds_per_prompt=1"))
    generate_run(run)  # the base model, for comparison
    (write_full_model if method == "full" else write_lora_model)(run, source)
    run.config.generate.checkpoint = None  # the trained model in model/
    generate_run(run)
    base_dir, trained_dir = sample_folders(run.root)
    base_png, trained_png = base_dir / "film-noir-1-s0.png", trained_dir / "film-noir-1-s0.png"
    params = read_params(trained_png)
    assert params.method == method and params.model_name == "me" and params.checkpoint is None
    assert (params.lora_hash is not None) == (method == "lora")
    if method == "lora":
        assert params.model_hash == read_params(base_png).model_hash  # the base under the LoRA
        assert "Lora hashes" in read_text_chunks(trained_png)["parameters"]
        assert not np.array_equal(np.asarray(Image.open(base_png)), np.asarray(Image.open(trained_png)))
    capsys.readouterr()
    assert main(["generate", str(run.root), "--from", str(trained_png)]) == 0
    assert "bit-identical" in capsys.readouterr().out


# ---------------------------------------------------------------- bad input and stopping


def test_best_of_n_without_photos_stops_before_loading(tmp_path, tiny_models, capsys):
    root = tmp_path / "run"
    rc = main(["generate", str(root), *settings(tiny_models["sd1"], "generate.seeds_per_prompt=4", "generate.keep=1")])
    err = capsys.readouterr().err
    assert rc == 2 and "lookalike prepare" in err and "Traceback" not in err
    assert not (root / "samples").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (['generate.styles=["van-gogh"]'], "no style named 'van-gogh'"),
        (["generate.checkpoint=step-000400", "generate.keep=4"], "generate.checkpoint=base"),
        (["generate.scorer=likeness9000", "generate.keep=1"], "no scorer named 'likeness9000'"),
        (["generate.width=30"], "multiple of 8"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(tmp_path, tiny_models, capsys, extra, message):
    root = tmp_path / "run"
    add_photos(root)
    rc = main(["generate", str(root), *settings(tiny_models["sd1"]), *extra])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (root / "samples").exists()


def test_unreadable_prepared_photo_is_reported(tmp_path, tiny_models, capsys):
    root = tmp_path / "run"
    add_photos(root)[0].unlink()
    rc = main(["generate", str(root), *settings(tiny_models["sd1"], "generate.keep=1")])
    assert rc == 2 and "lookalike prepare" in capsys.readouterr().err


def test_from_refuses_images_it_cannot_rerender(tmp_path, capsys):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert main(["generate", "--from", str(plain)]) == 2
    assert "no lookalike parameters" in capsys.readouterr().err
    assert main(["generate"]) == 2
    assert "give a run folder" in capsys.readouterr().err


def test_from_names_a_run_that_is_gone(tmp_path, capsys):
    from lookalike.sample.pngmeta import png_bytes

    params = read_params_template()
    params.run = str(tmp_path / "moved-away")
    image = tmp_path / "old.png"
    image.write_bytes(png_bytes(Image.new("RGB", (32, 32)), params))
    assert main(["generate", "--from", str(image)]) == 2
    assert "not there any more" in capsys.readouterr().err
    assert not (tmp_path / "moved-away").exists()


def test_stop_file_ends_generation_cleanly(tmp_path, tiny_models):
    run = Run.open(tmp_path / "run", overrides=settings(tiny_models["sd1"], "generate.seeds_per_prompt=2"))
    run.stop_path.touch()
    summary = generate_run(run)
    assert summary.startswith("stopped after 0 of 2") and summary.endswith("run the same command again to continue")
    (folder,) = sample_folders(run.root)
    assert read_jsonl(folder / "manifest.jsonl") == [] and (folder / "index.html").is_file()
    assert not run.stop_path.exists()
