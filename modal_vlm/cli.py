"""The ``modal-vlm`` command line: ``demo`` (offline, no data needed), ``run`` (active
learning on an image folder, resumable) and ``encode`` (images into the embedding cache,
optionally on Ray: :mod:`modal_vlm.distributed`).

:func:`main` is the entry point; the options are described in the documentation's
experiment-runner page. Building the parser imports nothing heavy (``--help`` answers at
once); a subcommand imports what it needs when it runs, and the runner checks every setting
before the backbone loads.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
import warnings

#: The demo's model: the default offline reference model (an offline stand-in, not CLIP).
DEMO_MODEL = "linear-conse-efficientnet-lite0-minilm"
#: The demo's image-encoder resolution: CIFAR's 32 px photos gain nothing from more.
DEMO_IMAGE_SIZE = 96
#: The demo's learner: the zero-shot-initialised linear head, as accurate as prompt tuning on
#: 10-80 labels (``benchmarks/results/learners.md``) and fast enough that a run costs little
#: more than encoding its images (``benchmarks/results/cost.md``). ``--learner prompt`` runs
#: CoOp prompt tuning instead.
DEMO_LEARNER = "linear"
#: ``modal-vlm --help``'s description (plain text: the module docstring is reStructuredText).
DESCRIPTION = ("Active learning with vision-language models. demo: an offline run on an "
               "embedded CIFAR-10 sample, no data needed. run: active learning on an image "
               "folder, resumable. label: label images in the browser while the model learns. "
               "label-studio-backend: the same loop inside Label Studio, as its ML backend. "
               "encode: image files into an embedding cache, optionally on a Ray cluster.")

#: ``run`` options that set a :class:`~modal_vlm.runner.RunConfig` field.
SETTING_FLAGS = {"data": "data", "test_data": "test_data", "test_size": "test_size",
                 "split_seed": "split_seed", "max_per_class": "max_per_class",
                 "max_test_per_class": "max_test_per_class", "on_bad_image": "on_bad_image",
                 "strategy": "strategies", "seed": "seeds", "rounds": "rounds", "budget": "budget",
                 "first_round": "first_round", "audit_fraction": "audit_fraction", "label_noise": "label_noise",
                 "learner": "learner", "none_data": "none_data", "long_tail": "long_tail"}
#: ``run`` options that set a ``ClipPromptClassifier`` parameter.
CLASSIFIER_FLAGS = {"model": "model_name", "pretrained": "pretrained", "epochs": "max_epochs",
                    "lr": "lr", "batch_size": "batch_size", "image_size": "image_size",
                    "cache_dir": "cache_dir", "device": "device"}


def _print_summary(result) -> None:
    print(f"\n{'strategy':<14}{'seeds':>5}{'labels':>8}  {'final accuracy':>15}  {'AULC':>15}  stable from round")
    for row in result.summary:
        stop = "never" if row.get("stop_round") is None else \
            f"{row['stop_round']:.1f} ({row['n_seeds_stable']} of {row['n_seeds']} seeds)"
        print(f"{row['strategy']:<14}{row['n_seeds']:>5}{row['n_labeled']:>8}  "
              f"{row['final_accuracy_mean']:>7.3f} ± {row['final_accuracy_std']:.3f}  "
              f"{row['aulc_mean']:>7.3f} ± {row['aulc_std']:.3f}  {stop}")
    files = ", ".join(path.name for path in sorted(result.path.iterdir())
                      if path.is_file() and not path.name.startswith("."))
    print(f"results in {result.path}: {files}")


def demo(args) -> int:
    """Active learning with the default offline model on the embedded CIFAR-10 sample."""
    from .datasets import load_cifar10_sample
    from .runner import RunConfig, RunData, run_experiment

    X_pool, y_pool, X_test, y_test, names = load_cifar10_sample(args.pool_per_class, args.test_per_class)
    data = RunData(X_pool, y_pool, X_test, y_test, names, source="embedded CIFAR-10 sample")
    classifier = {"model_name": DEMO_MODEL, "image_size": DEMO_IMAGE_SIZE}
    if args.epochs is not None:
        classifier["max_epochs"] = args.epochs
    # Every strategy from the zero-shot model (cold start): no random first round to hide behind.
    config = RunConfig(strategies=tuple(args.strategy), seeds=tuple(args.seed), rounds=args.rounds,
                       first_round="strategy", classifier=classifier, learner=args.learner)
    intro = (f"modal-vlm demo: {len(y_pool)} unlabeled CIFAR-10 images, {len(y_test)} test images, "
             f"{args.rounds} rounds x {len(names)} labels from the zero-shot start, "
             f"{' vs. '.join(args.strategy)}, offline model {DEMO_MODEL}, {args.learner} learner, "
             f"results in {args.out}")
    # The rule of `run`: an unfinished demo resumes; a finished one, or anything else in
    # --out, is replaced only with --overwrite (refused before the intro is printed).
    result = run_experiment(config, args.out, data=data, overwrite=args.overwrite, progress=not args.quiet,
                            title="modal-vlm demo: CIFAR-10 sample, offline linear-ConSE model", intro=intro)
    if not args.quiet:
        _print_summary(result)
    return 0


def _toml_value(text: str):
    """``text`` read as a TOML value (number, bool, list, quoted string), else as a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _param(text: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), _toml_value(value.strip())


def _test_size(text: str):
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def run_config(args):
    """The :class:`~modal_vlm.runner.RunConfig` of ``modal-vlm run``'s arguments: defaults,
    then the ``--config`` file, then the options given."""
    from .runner import RunConfig

    config = RunConfig.from_toml(args.config) if getattr(args, "config", None) else RunConfig()
    given = vars(args)
    classifier = {param: given[flag] for flag, param in CLASSIFIER_FLAGS.items() if flag in given}
    classifier.update(dict(getattr(args, "param", [])))
    return config.override(classifier=classifier,
                           **{setting: given[flag] for flag, setting in SETTING_FLAGS.items() if flag in given})


def run(args) -> int:
    """Active learning on an image folder, checkpointed in ``--out``."""
    from .runner import run_experiment

    result = run_experiment(run_config(args), args.out, overwrite=args.overwrite, progress=not args.quiet)
    if not args.quiet:
        _print_summary(result)
    return 0


def _demo_epochs(text: str):
    return text if text == "auto" else int(text)


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="offline active-learning run on an embedded CIFAR-10 sample",
                       description="A small active-learning experiment with the default offline "
                                   "model on the CIFAR-10 sample that ships with modal-vlm (1,000 "
                                   "pool and 500 test photos): CEC against random from the "
                                   "zero-shot start, no data argument, no download.")
    p.add_argument("--strategy", nargs="+", default=["cec", "random"], metavar="NAME",
                   help="query strategies to compare (default: cec random)")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--learner", choices=("linear", "prompt"), default=DEMO_LEARNER,
                   help="linear: a zero-shot-initialised linear head (default, fast); prompt: CoOp "
                        "prompt tuning, the canonical estimator")
    p.add_argument("--epochs", type=_demo_epochs, default=None, metavar="N|auto",
                   help="training epochs per round (default: the learner's own; auto: the prompt "
                        "learner's shot schedule)")
    p.add_argument("--pool-per-class", type=int, default=None, metavar="N",
                   help="pool images per class (at most 100, the default)")
    p.add_argument("--test-per-class", type=int, default=None, metavar="N",
                   help="test images per class (at most 50, the default)")
    p.add_argument("--seed", type=int, nargs="+", default=[0], metavar="N", help="seeds (default: 0)")
    p.add_argument("--out", default="modal-vlm-demo", metavar="DIR",
                   help="output folder: tables and learning_curve.png (default: ./modal-vlm-demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished demo, or a run with other settings, in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or tables")
    p.set_defaults(func=demo)


def _add_run_parser(sub) -> None:
    # No `choices=` from modal_vlm.runner: importing it loads torch, and --help must be
    # instant. RunConfig.validate checks these values first, naming the valid ones.
    p = sub.add_parser(
        "run", help="active learning on an image folder (resumable)",
        argument_default=argparse.SUPPRESS,
        description="Active learning on an image folder (one sub-folder of images per class), with "
                    "the PCB/CEC protocol by default: 8 rounds of one label per class, round 1 at "
                    "random, seeds 0 1 2, CoOp training. Settings come from the defaults, then "
                    "--config, then the options given. Every finished round is saved in --out: "
                    "run the same command again to resume an interrupted run.")
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="DIR", help="image folder of the unlabeled pool")
    data.add_argument("--test-data", metavar="DIR",
                      help="image folder of the test set (default: a stratified split of --data)")
    data.add_argument("--test-size", type=_test_size, metavar="F",
                      help="without --test-data: test fraction, or count, of --data (default 0.2)")
    data.add_argument("--split-seed", type=int, metavar="N", help="seed of the split and subsets (default 0)")
    data.add_argument("--max-per-class", type=int, metavar="N", help="images per class read from --data")
    data.add_argument("--max-test-per-class", type=int, metavar="N",
                      help="images per class read from --test-data")
    data.add_argument("--on-bad-image", metavar="fail|skip",
                      help="unreadable image files: stop (fail, default) or leave out with a warning")
    data.add_argument("--none-data", metavar="DIR",
                      help="image folder of images of none of the classes, mixed into pool and test set; "
                           "the simulated oracle answers 'none of these classes' for them")
    data.add_argument("--long-tail", type=float, metavar="RATIO",
                      help="make the pool long-tailed: class counts decay by a constant factor down to "
                           "1/RATIO of the first class's (e.g. 100)")
    protocol = p.add_argument_group("protocol")
    protocol.add_argument("--strategy", nargs="+", metavar="NAME",
                          help="query strategies, e.g. cec entropy random entropy+pcb (default: cec)")
    protocol.add_argument("--seed", nargs="+", type=int, metavar="N", help="seeds (default: 0 1 2)")
    protocol.add_argument("--rounds", type=int, metavar="N", help="query rounds (default 8)")
    protocol.add_argument("--budget", type=int, metavar="N", help="labels per round (default: number of classes)")
    protocol.add_argument("--first-round", metavar="random|strategy",
                          help="round 1 at random (default) or by the strategy from zero-shot predictions")
    protocol.add_argument("--audit-fraction", type=float, metavar="F",
                          help="share of each round's labels drawn at random, for the accuracy estimate "
                               "without a test set (default 0.2; 0 disables the audit picks)")
    protocol.add_argument("--label-noise", type=float, metavar="P",
                          help="simulate a careless oracle: flip this share of the pool's labels (seeded), "
                               "to test the suspect-label flags (default 0)")
    model = p.add_argument_group("classifier")
    model.add_argument("--learner", metavar="prompt|linear",
                       help="prompt: CoOp prompt tuning (default); linear: a zero-shot-initialised "
                            "linear head on the embeddings, much faster to train")
    model.add_argument("--model", metavar="NAME", help="backbone name (default ViT-B-32)")
    model.add_argument("--pretrained", metavar="TAG|FILE", help="open_clip tag or local weights file")
    model.add_argument("--epochs", type=int, metavar="N",
                       help="training epochs per round (default: by labels per class, 3 / 50 / 80)")
    model.add_argument("--lr", type=float, help="learning rate (default 0.01)")
    model.add_argument("--batch-size", type=int, metavar="N", help="training batch size (default 128)")
    model.add_argument("--image-size", type=int, metavar="PX", help="image encoder resolution (default: the model's)")
    model.add_argument("--cache-dir", metavar="DIR", help="keep image embeddings on disk here")
    model.add_argument("--device", metavar="NAME", help="torch device (default cpu)")
    model.add_argument("--param", action="append", type=_param, metavar="KEY=VALUE",
                       help="any other ClipPromptClassifier parameter, e.g. --param n_ctx=4 "
                            "(repeatable; values are read as TOML)")
    p.add_argument("--config", metavar="FILE", help="TOML file of settings, [classifier] table for the model")
    p.add_argument("--out", required=True, metavar="RUN_DIR",
                   help="run directory: config.json, rounds.json/csv, summary.json, learning_curve.png")
    p.add_argument("--overwrite", action="store_true", default=False,
                   help="replace a finished run, or a run with other settings, in --out")
    p.add_argument("--quiet", action="store_true", default=False, help="no progress bars or tables")
    p.set_defaults(func=run)


def _add_label_parser(sub) -> None:
    from .labeling.commands import add_label_parser, add_label_studio_backend_parser   # no web stack yet

    add_label_parser(sub)
    add_label_studio_backend_parser(sub)


def encode(args) -> int:
    """Encode image files into an embedding cache (in-process or on Ray); 1 if some were unreadable."""
    from .distributed import encode_to_cache

    report = encode_to_cache(args.images, args.model, args.cache_dir, pretrained=args.pretrained,
                             image_size=args.image_size, device=args.device, dtype=args.dtype,
                             ray_address=args.ray, num_workers=args.workers, shard_size=args.shard_size,
                             batch_size=args.batch_size, progress=not args.quiet)
    print(f"{report.n_images} images in {report.n_shards} shards ({report.n_shards_skipped} finished "
          f"earlier): {report.n_encoded} encoded, {report.n_cached} already cached, "
          f"{len(report.bad_images)} unreadable; {report.seconds:.1f} s, {report.workers} worker(s), "
          f"{report.images_per_second:.1f} images/s; cache {args.cache_dir} ({report.cache_key})")
    for path, reason in report.bad_images:
        print(f"modal-vlm: unreadable image {path}: {reason}", file=sys.stderr)
    return 1 if report.bad_images else 0


def _add_encode_parser(sub) -> None:
    p = sub.add_parser(
        "encode", help="encode image files into an embedding cache (optionally on a Ray cluster)",
        description="Encode image files into the on-disk embedding cache that --cache-dir / "
                    "ClipPromptClassifier(cache_dir=...) read, so later runs do not encode them "
                    "again. Resumable: run the same command again after an interruption. "
                    "Unreadable images are listed and the exit status is 1.")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="image files and folders (searched recursively)")
    p.add_argument("--model", default="ViT-B-32", metavar="NAME", help="backbone name (default ViT-B-32)")
    p.add_argument("--pretrained", metavar="TAG|FILE", help="open_clip tag or local weights file")
    p.add_argument("--image-size", type=int, metavar="PX", help="image encoder resolution (default: the model's)")
    p.add_argument("--cache-dir", required=True, metavar="DIR", help="the embedding cache folder")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="storage dtype of the embeddings (float16 halves the disk footprint)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="encode on a Ray cluster: auto, local or ray://host:port (needs modal-vlm[ray])")
    p.add_argument("--workers", type=int, metavar="N", help="Ray encoder workers (default: one per GPU, else per CPU)")
    p.add_argument("--shard-size", type=int, default=1024, metavar="N", help="images per shard (default 1024)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per forward pass (default 64)")
    p.add_argument("--device", default="cpu", metavar="NAME", help="torch device in-process (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=encode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modal-vlm", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(sub)
    _add_run_parser(sub)
    _add_label_parser(sub)
    _add_encode_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"modal-vlm: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .exceptions import ModalVLMError

    with warnings.catch_warnings():
        warnings.simplefilter("default", UserWarning)
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except (ModalVLMError, ValueError, OSError) as exc:   # the library's refusals, bad files
            print(f"modal-vlm: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            saved = (f"finished shards are saved in {args.cache_dir}" if args.command == "encode"
                     else f"finished rounds are saved in {args.out}")
            print(f"\nmodal-vlm: interrupted; {saved}. Run the same command again to resume.", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
