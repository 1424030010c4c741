"""The model layer: what the rules read, defined once, importing nothing of patchaudit's but
the finding model.

* :mod:`.source`: what one source file says (execution contexts ``MODULE``/``MAIN``/...,
  :class:`~.source.ImportRecord`, :class:`~.source.PatchPoint`, the parsed
  :class:`~.source.FileContext`), filled by the static engine;
* :mod:`.events`: the recorders' event dicts as one dataclass per kind, with
  :data:`~.events.EVENT_SCHEMA_VERSION`;
* :mod:`.facts`: :class:`~.facts.Facts` and :class:`~.facts.RuntimeContext` (built by
  :meth:`~.facts.RuntimeContext.observe`), the questions runtime rules ask of a run;
* :mod:`.machinery`: what counts as the patching machinery, the patch options that matter;
* :mod:`.known`: the data tables (known importers, on-import patchers, C libraries).

The rules import this layer and nothing above it; the static engine, the runtime audit and the
pytest plugin produce its objects. Submodules are imported by name (nothing is re-exported
here), so importing one does not load the others.
"""
