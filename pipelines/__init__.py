"""``liveagg.pipelines``: a run from view files to a finished Beam job, phase by phase.

1. load and validate: :func:`liveagg.loader.load_views` (JSON Schema, then the checks
   that need more than one field; errors name the file and the field);
2. compile: :func:`liveagg.engine.compiled.compile_views`, once per view and run, with the
   checks that depend on the run (:class:`~liveagg.engine.compiled.RunContext`);
3. plan and graph: :func:`.compile.build` adds each source's read and its views' aggregate
   transforms (bounded or streaming) to the pipeline; workers build their runtime plan
   (:class:`liveagg.transforms.plan.ViewPlan`) from the compiled views they receive;
4. sinks: :func:`.compile.attach_sinks` delivers rows, dead letters and milestones;
5. run and report: :func:`.run.run` ties the phases together for the command line.
"""
