"""How Omniglot-like are the glyph alphabets? The numbers behind issue 16, side by side.

Prints, for the data set of one seed:

* the characters it holds (font glyphs kept and left out by each rule, invented ones, sides);
* the image statistics of a sample of its drawings at 105 x 105 (p10 / median / p90) beside
  real Omniglot's, measured with the reference page's definitions
  (:mod:`metaedu.data.glyphs.statistics`), and the 28 x 28 checks;
* the structural noise: each change's stated mean rate, and the rate observed in the drawings;
* the build's CPU time (run with ``--rebuild`` to measure it; otherwise the cache is loaded).

    python benchmarks/glyph_statistics.py [--characters 200] [--seed 0] [--rebuild]
"""

from __future__ import annotations

import argparse
import resource

import numpy as np

from metaedu.data import glyphs as G
from metaedu.data.glyphs import statistics as S
from metaedu.data.glyphs.drawers import STRUCTURAL_NOISE
from metaedu.data.glyphs.structure import EVENTS


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--characters", type=int, default=200, help="characters sampled for the statistics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="build without the cache and time it")
    args = parser.parse_args()
    if args.characters < 1:
        raise ValueError("--characters must be at least 1")

    start = cpu_seconds()
    data = G.build_glyphs(args.seed) if args.rebuild else G.load_glyphs(args.seed)
    took = cpu_seconds() - start
    print(f"glyph data version {G.DATA_VERSION}, seed {args.seed}")
    print(data.summary())
    sel = data.selection
    print(f"font glyphs: {sel.get('candidates')} distinct candidates; left out {sel.get('blots')} blots, "
          f"{sel.get('style_variants')} style variants, {sel.get('look_alikes')} look-alikes; kept {sel.get('kept')}")
    print(f"invented: {data.n_invented} characters in {len({t.alphabet for t in data.types if t.alphabet})} alphabets")
    if args.rebuild:
        print(f"build: {took:.1f} s CPU ({data.build_seconds:.1f} s wall)")
    else:
        print(f"loaded from the cache in {took:.1f} s CPU (the first build took {data.build_seconds:.1f} s wall; --rebuild times it)")

    rng = np.random.default_rng(args.seed)
    chars = rng.choice(data.n_characters, size=min(args.characters, data.n_characters), replace=False)
    drawers = G.sample_drawers(args.seed)
    rows, grey_ink, grey_pen = [], [], []
    events = {k: 0 for k in EVENTS}
    chances = {k: 0 for k in EVENTS}
    for c in chars:
        binary, logs = G.draw_character(data.types[c], int(c), args.seed, drawers)
        grey = G.downsample(binary, 28) / 255.0
        for b, g in zip(binary, grey):
            rows.append(S.image_statistics(b))
            grey_ink.append(g.mean())
            grey_pen.append(S.grey_pen_width(g))
        for log in logs:
            for k in EVENTS:
                events[k] += log[k]
                chances[k] += log[f"{k}_chances"]
    print(f"\n{len(rows)} drawings of {len(chars)} characters:")
    print(S.comparison_table(S.summarise(rows)))
    pct = lambda v: " / ".join(f"{x:.3f}" for x in np.percentile(v, [10, 50, 90]))  # noqa: E731
    print(f"{'at 28 x 28: mean ink intensity':<36} {pct(grey_ink):>26}   {'reference mean ' + str(S.OMNIGLOT_28PX['ink']):>30}")
    print(f"{'at 28 x 28: pen width (grey runs)':<36} {pct(grey_pen):>26}   {'reference about ' + str(S.OMNIGLOT_28PX['pen']):>30}")
    print("\nstructural noise (per chance; drawers' own rates spread around the mean):")
    print(f"{'change':<10} {'chances':>8} {'events':>7} {'observed':>9} {'stated mean':>12}")
    for k in EVENTS:
        observed = events[k] / max(chances[k], 1)
        print(f"{k:<10} {chances[k]:>8} {events[k]:>7} {observed:>9.3f} {getattr(STRUCTURAL_NOISE, k):>12.3f}")


if __name__ == "__main__":
    main()
