"""One candidate's life, in order: prompts -> generate (preflight first) -> candidate -> (sandbox) -> grade
-> score -> report; schedule is the sandbox job queue, store resumes a run, outputs owns the output
directory. harness.pipeline chains these stages."""
