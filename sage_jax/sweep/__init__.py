"""The sweep engine: the checked plan, the offload gate, the jitted edge and server steps, the
uplink, the host pipeline, the run loop with its workdir, several hosts, the compile cache."""
