"""DVC stage `world`: build the organism's synthetic world into data/world/ (only when the backbone is the organism;
for a real model it records that no world is built, and the eval suite points at the user's files)."""

import json

from stages._cli import end_process, log, parser, run

from safepatching.layout import Project


def main(argv=None) -> int:
    def go(args, params):
        out = Project(args.root).world
        if params.backbone.source != "organism":
            out.mkdir(parents=True, exist_ok=True)
            (out / "meta.json").write_text(json.dumps({"organism": False, "backbone": params.backbone.source}))
            log(f"world: backbone is {params.backbone.source!r}, not the organism: no world built")
            return
        from safepatching.organism.world import build_world, save_world

        meta = save_world(build_world(params.world, params.seed), out)
        log(f"world: {meta['counts']}")
    return run(go, parser(__doc__), argv)


if __name__ == "__main__":
    end_process(main())
