"""DVC stage `backbone`: build the organism (source: organism) or copy any HF model to models/backbone."""

from stages._cli import end_process, log, parser, run

from safepatching.layout import Project


def main(argv=None) -> int:
    def go(args, params):
        from safepatching.io.atomic import atomic_dir
        from safepatching.io.models import materialise

        project = Project(args.root)
        out = project.model("backbone")
        b = params.backbone
        if b.source == "organism":
            from safepatching.organism.model import build_organism

            with atomic_dir(out, overwrite=True) as tmp:
                summary = build_organism(project.world, tmp, b, params.seed, log=log)
            log(f"backbone: {summary}")
        else:
            rec = materialise(b.source, out, b.revision, project.root)
            log(f"backbone: {b.source} -> {out} ({rec['kind']}: "
                + (f"content sha256 {rec['sha256'][:12]})" if rec["kind"] == "local" else
                   f"revision {rec['revision'] or 'default'}, commit {rec['commit'] or '?'})"))
    return run(go, parser(__doc__), argv)


if __name__ == "__main__":
    end_process(main())
