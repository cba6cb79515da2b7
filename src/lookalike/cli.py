"""The `lookalike` command: a table of verbs over one run folder. No logic of its own.

Every verb is ``lookalike VERB RUN [--config FILE | --preset NAME] [key=value ...]``; the
key=value pairs are dotted overrides of the run's config (``train.learning_rate=2e-6``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lookalike.errors import LookalikeError

# verb -> (module, function, one-line help). Functions take (run, **verb_flags) and return a
# printable summary (or None).
VERBS: dict[str, tuple[str, str, str]] = {
    "prepare": ("lookalike.data.prepare", "prepare_run", "Clean, orient, crop and de-duplicate the subject photos."),
    "identifier": ("lookalike.identifier", "check_run", "Check the identifier token on the model's tokenizer; propose rare ones."),
    "priors": ("lookalike.prior.generate", "generate_priors", "Generate (or top up) the class-prior images."),
    "audit": ("lookalike.prior.audit", "audit_run", "Compare priors with the subject photos (attribute shares, variety); flag bad priors, propose a refined class prompt (audit.apply=true writes it); after priors from a new prompt, say whether they moved towards the photos or narrowed."),
    "train": ("lookalike.train.loop", "train_run", "Train with prior preservation; resumes from the latest checkpoint."),
    "generate": ("lookalike.sample.generate", "generate_run", "Render the subject in styles and prompts, best-of-N, with an HTML gallery."),
    "eval": ("lookalike.metrics.evaluate", "eval_run", "Score every checkpoint (DINO, CLIP-I/T, PRES, DIV, face identity); report, plots, a recommended checkpoint."),
    "export": ("lookalike.models.export", "export_run", "Export the trained model: single .safetensors, kohya/diffusers LoRA or diffusers folder, plus a model card."),
}

# Flags only some verbs take: verb -> {flag: argparse keywords}; the values reach the verb function
# as keywords. Such a verb may leave out RUN when a flag says where to work (generate --from IMAGE).
VERB_FLAGS: dict[str, dict[str, dict]] = {
    "generate": {
        "--from": dict(dest="from_image", metavar="IMAGE", help="re-render IMAGE exactly from the parameters it carries (RUN defaults to the image's run)")
    },
}

EPILOG = """examples:
  lookalike prepare runs/me subject.photos=~/photos/me subject.class_noun=man subject.kind=person
  lookalike identifier runs/me
  lookalike priors runs/me priors.num_images=200
  lookalike train runs/me --preset person-lora train.max_steps=800
  lookalike generate runs/me generate.styles='["film-noir","monet"]'   (or: generate --from IMAGE.png)
  lookalike config --help-keys        every config key with its default and help

Every verb reads and writes one run folder; running a verb again continues where it stopped.
Create a file named STOP in the run folder to stop a running verb cleanly."""


def _add_run_args(p: argparse.ArgumentParser, flags: dict[str, dict]) -> None:
    p.add_argument("run", nargs="?" if flags else None, help="run folder, e.g. runs/me (created if missing)")
    for flag, spec in flags.items():
        p.add_argument(flag, **spec)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", metavar="FILE", help="TOML config to start from (replaces the run's saved config)")
    src.add_argument("--preset", metavar="NAME", help="shipped preset to start from (see `lookalike config --presets`)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.max_steps=400")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Teach a text-to-image model one subject from a few photos (DreamBooth), then render it anywhere.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (_, _, help_text) in VERBS.items():
        _add_run_args(verbs.add_parser(name, help=help_text, description=help_text), VERB_FLAGS.get(name, {}))
    demo = verbs.add_parser(
        "demo",
        help="Replay the whole story on the bundled toy model in a few minutes (CPU is fine).",
        description="prepare -> identifier -> priors -> audit -> refined priors -> train -> generate -> eval -> export, "
        "on the toy model and its bundled person; prints where to look.",
    )
    demo.add_argument("run", nargs="?", default="runs/demo", help="run folder (default: runs/demo)")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. train.max_steps=100")
    cfg_parser = verbs.add_parser("config", help="Show the resolved config of a run, every key, or the presets.")
    cfg_parser.add_argument("run", nargs="?", help="run folder whose config to show")
    cfg_parser.add_argument("--help-keys", action="store_true", help="list every key with its default and help")
    cfg_parser.add_argument("--presets", action="store_true", help="list the shipped presets")
    return parser


def _config_verb(args: argparse.Namespace) -> str:
    from lookalike import config as cfg
    from lookalike.run import Run

    if args.help_keys:
        return cfg.describe_keys()
    if args.presets:
        return "\n".join(cfg.preset_names())
    if args.run:
        return cfg.to_toml(Run.open(args.run).config)
    raise LookalikeError("give a run folder, --help-keys or --presets")


def _demo_verb(args: argparse.Namespace) -> str:
    from lookalike.demo import demo_run, open_demo_run

    return demo_run(open_demo_run(args.run, args.overrides))


def dispatch(args: argparse.Namespace) -> str | None:
    if args.verb == "config":
        return _config_verb(args)
    if args.verb == "demo":
        return _demo_verb(args)
    from lookalike.run import Run

    module, function, _ = VERBS[args.verb]
    verb = getattr(importlib.import_module(module), function)
    flags = {spec["dest"]: getattr(args, spec["dest"]) for spec in VERB_FLAGS.get(args.verb, {}).values()}
    if args.run is None:
        if all(v is None for v in flags.values()):
            raise LookalikeError(f"give a run folder: lookalike {args.verb} RUN")
        result = verb(None, **flags)
        return None if result is None else str(result)
    # The config is saved only once the verb has accepted it: a verb that refuses its input
    # (missing photos, say) leaves the run's saved config as it was.
    run = Run.open(args.run, config_file=args.config, preset=args.preset, overrides=args.overrides, save=False)
    try:
        result = verb(run, **flags)
    except KeyboardInterrupt:
        run.save_config()
        raise
    run.save_config()
    return None if result is None else str(result)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        out = dispatch(args)
    except LookalikeError as err:
        print(f"lookalike {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lookalike {args.verb}: interrupted", file=sys.stderr)
        return 130
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
