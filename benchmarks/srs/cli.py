"""``python benchmarks/srs_vs_vanilla.py``: run (or ``--render``) and write tables and plot."""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
from common import tune_allocator

from .config import PLOT, RESULTS, ROOT, configs, parse
from .plot import plot
from .records import load_records, save_records
from .render import document, render
from .running import run_parallel

DESCRIPTION = "Serialized (SRS) against vanilla randomized smoothing on the bundled MDEQs."


def main(argv: Iterable[str] | None = None) -> None:
    args = parse(argv, DESCRIPTION)
    cfgs = configs(args)
    suffix = "-quick" if args.quick else ""
    out = args.out or RESULTS / f"srs_vs_vanilla{suffix}.md"
    png = args.plot or (PLOT if not args.quick else RESULTS / "srs_vs_vanilla-quick.png")
    torch.set_num_threads(args.threads)
    tuned = tune_allocator() if not args.no_allocator else False
    sections, recs = [], []
    for position, cfg in enumerate(cfgs):
        cfg.allocator = tuned
        records_path = out.with_name(f"{out.stem}-sigma{cfg.sigma:g}.jsonl")
        if args.render:
            if not records_path.is_file():
                raise SystemExit(f"--render: no saved records at {records_path} (run without it)")
            cfg, rec, minutes = load_records(records_path)
            cfgs[position] = cfg
        else:
            start = time.perf_counter()
            rec = run_parallel(cfg, args.untrained, args.checkpoint)
            minutes = (time.perf_counter() - start) / 60
            save_records(records_path, cfg, rec, minutes)
        text = render(cfg, rec, minutes)
        print(text, flush=True)
        sections.append(text)
        recs.append(rec)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document(sections), encoding="utf-8")
    plot(cfgs, recs, png)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} and {png}")
