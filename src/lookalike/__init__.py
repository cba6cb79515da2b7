"""lookalike: DreamBooth for people who just want pictures of their subject.

Python use mirrors the CLI: open a run folder, then call the verbs on it::

    from lookalike.run import Run
    from lookalike.data.prepare import prepare_run
    run = Run.open("runs/me", overrides=["subject.photos=photos/me", "subject.class_noun=man"])
    prepare_run(run)
"""

__version__ = "0.1.0"
