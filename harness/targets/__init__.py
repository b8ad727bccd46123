"""Reference targets regenerated from gold solutions (harness.targets: rewrite, compare, build, check).

SciCode compares each test case's result with a stored ``target`` value (the
official ``test_data.h5``).  For problems that ship gold code (the dev split,
user-written problems) the targets can be made locally:

1. ``rewrite.rewrite_test`` turns the one assertion that compares something with
   ``target`` into ``__scicode_record__(EXPR)`` so running the test records the
   value the assertion would compare against ``target``;
2. ``build.build`` runs every step's gold code (all previous steps' gold code + this
   step's) with the rewritten tests in the sandbox, twice by default, decodes
   the recorded values (``harness.sandbox.codec``, never pickle), compares the runs and
   writes the values with ``harness.data.h5targets.write_targets``;
3. ``check.check`` compares such a file with an official one.
"""
