"""``m2m-demo OUT``: the whole app on an embedded default, end to end, in a few minutes on a laptop.

It writes a small synthetic BIDS dataset with planted group differences (``OUT/bids``), trains and
cross-validates a tiny M2M-AlignNet on most participants (``m2m OUT/bids OUT/derivatives group
--preset tiny --participant-label ...``) and applies the model to the participants held out of
training (``... participant``), exactly as a user would run the two levels. Open
``OUT/derivatives/group.html`` and ``OUT/derivatives/sub-*.html`` afterwards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from m2m_bids.cli.app import main as m2m_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="m2m-demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("m2m-demo"),
                        help="folder for the synthetic dataset and the derivatives (default: ./m2m-demo)")
    parser.add_argument("--n-participants", type=int, default=20)
    parser.add_argument("--held-out", type=int, default=4, help="participants kept out of training and applied")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from m2m_bids.synth import SynthSpec, generate_dataset

    bids = args.out_dir / "bids"
    derivatives = args.out_dir / "derivatives"
    if not (bids / "dataset_description.json").is_file():
        spec = SynthSpec.preset("tiny", n_participants=args.n_participants, classes=("CN", "AD"),
                                effect_size=3.0, seed=args.seed)
        generate_dataset(bids, spec)
    labels = sorted(p.name.removeprefix("sub-") for p in bids.glob("sub-*"))
    train, held_out = labels[:-args.held_out], labels[-args.held_out:]
    # the tiny preset's 16^3 grid at 6 mm covers only the middle of the brain: the demo uses 32^3
    config = args.out_dir / "demo-config.toml"
    config.write_text("[preproc]\ngrid_shape = [32, 32, 32]\n", encoding="utf-8")
    common = ["--preset", "tiny", "--config-file", str(config), "--random-seed", str(args.seed),
              "--classes", "CN,AD"]
    runs = [("group", [*common, "--epochs", str(args.epochs), "--participant-label", *train]),
            ("participant", [*common, "--participant-label", *held_out])]
    for level, options in runs:
        try:
            m2m_main([str(bids), str(derivatives), level, *options])
        except SystemExit as done:
            if done.code:
                sys.exit(done.code)
    print(f"done: open {derivatives / 'group.html'} and {derivatives}/sub-*.html")


if __name__ == "__main__":
    main()
