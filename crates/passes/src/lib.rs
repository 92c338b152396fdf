//! kiln-passes: the pass manager, passes and the egg-based rewriter (built out in the passes issue).
