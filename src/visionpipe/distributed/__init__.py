"""Batch detection at scale: sharded, resumable jobs on one machine (local processes) or on a Ray
cluster, with the same shard plan, output files and manifest for both, and merging of the results."""

from visionpipe.distributed.jobs import JobSettings, JobSummary, run_job
from visionpipe.distributed.merge import merge_job
from visionpipe.distributed.shards import Shard, iter_shards

__all__ = ["JobSettings", "JobSummary", "Shard", "iter_shards", "merge_job", "run_job"]
