"""`mobilenets reproduce`: the paper's comparisons trained, with the report beside the paper."""

from __future__ import annotations

import argparse

# --- reproduce --------------------------------------------------------------------------------------


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="train the paper's comparisons (Tables 4-9, Figures 4-5) on a real dataset and write a report",
        description="Train and evaluate the paper's comparisons with one recipe and fixed seeds, then write "
        "report.md (paper figures beside ours), PNG plots and results.json to --out. Every finished run is "
        "cached under OUT/cells/: a re-run reuses it and an interrupted reproduction resumes.",
        epilog="examples:\n  mobilenets reproduce --preset tiny --out /tmp/tiny      # digits, 2 cells, seconds\n"
        "  nice mobilenets reproduce --preset quick --threads 1   # Fashion-MNIST subset, CPU, ~15 min\n"
        "  mobilenets reproduce --preset full --seeds 3           # the whole dataset, on a GPU",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        help="fashion-mnist, digits, or a folder (ImageFolder tree or CIFAR python pickles); default: the preset's",
    )
    p.add_argument("--preset", default="quick", help="tiny (CI), quick (CPU, minutes) or full (GPU); default quick")
    p.add_argument("--out", help="output folder (default reports/<preset>-<dataset>)")
    p.add_argument("--seeds", type=int, help="runs per cell, seeds 0..N-1 (default: the preset's: 1 quick, 2 full)")
    p.add_argument("--data-dir", help="folder with Fashion-MNIST's IDX files (default: Debian's)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: the idle cores); 1 is fastest on a busy shared machine",
    )
    p.add_argument("--verbose", action="store_true", help="show each run's per-epoch progress bars")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from mobilenets.reproduce import default_command, get_preset, reproduce, write_report

    dataset = args.dataset or get_preset(args.preset).dataset
    out = args.out or f"reports/{args.preset}-{dataset.rstrip('/').split('/')[-1]}"
    if args.threads is None and args.device in ("auto", "cpu"):
        import torch

        from mobilenets.training import set_cpu_threads

        if args.device == "cpu" or not torch.cuda.is_available():
            set_cpu_threads()  # the cores other processes leave idle: see --threads
    result = reproduce(
        dataset,
        preset=args.preset,
        out_dir=out,
        seeds=args.seeds,
        data_dir=args.data_dir,
        device=args.device,
        threads=args.threads,
        verbose=args.verbose,
        command=default_command(dataset, args.preset, out, args.seeds, args.threads),
    )
    paths = write_report(result)
    for claim in result.claims:
        print(f"claim {claim.id}: {claim.verdict:<14} {claim.title}")
    print(f"{result.trained_runs} run(s) trained, {result.cached_runs} reused from {out}/cells/")
    print(f"report: {paths['report']}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this group's subcommands (in `mobilenets --help` order)."""
    _add_reproduce(sub)
