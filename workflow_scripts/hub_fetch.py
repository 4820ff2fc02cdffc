import json
import logging
import os

from _workflow import to_log

to_log(snakemake.log[0])

from scdpo.hub import fetch, go_online, hub_cache
from scdpo.jsonl import atomic_write

# The one job that reaches the hub: it runs on the login node (a local rule), with the user's
# token from the environment (HF_TOKEN, or the file `hf auth login` wrote). Offline switches
# the user set for the rest are dropped for this process only, before huggingface_hub loads.
dropped = go_online(os.environ)
log = logging.getLogger("hub_fetch")
if dropped:
    log.info("online for this job only (dropped %s)", ", ".join(dropped))
log.info("hub cache %s", hub_cache())
fetched = fetch(snakemake.params.sources)
for record in fetched:
    log.info("%(kind)s %(id)s: commit %(commit)s, %(files)d files, %(bytes)d bytes", record)
with atomic_write(snakemake.output[0]) as handle:
    json.dump({"cache": hub_cache(), "fetched": fetched}, handle, indent=1)
